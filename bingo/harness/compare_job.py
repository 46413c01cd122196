"""What one ``bingo compare`` asks for (``CompareJob``: the shared setup and each method's
knobs) and the names of the methods it knows; the runners are in :mod:`.methods`, the run
in :mod:`.compare`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..evidence.estimators import ESTIMATORS
from .jobs import RunSetup

METHODS = ("bingo", "bingo-gradual", "gmp", "gmp-layer", "gmp-lamp", "imp", "magnitude",
           "wanda", "sparsegpt", "random", "smart-ratio", "hybrid", "snip", "grasp", "synflow")
GRADUAL = ("bingo-gradual", "gmp", "gmp-layer", "gmp-lamp")  # prune during the one training run
ESTIMATOR_ROWS = tuple(f"bingo:{e}" for e in ESTIMATORS)


def is_method(name: str) -> bool:
    """A method ``bingo compare`` knows: one of METHODS, or bingo:<estimator>."""
    return name in METHODS or name in ESTIMATOR_ROWS


def is_bingo(method: str) -> bool:
    return method == "bingo" or method in ESTIMATOR_ROWS


DEFAULT_RAMP = 4.0  # the measured D of the fine-tune ramp (docs/results.md)


@dataclass
class CompareJob(RunSetup):
    """One comparison: the shared setup (data, model, training, BINGO's search) and each
    method's own knobs."""

    methods: Optional[Sequence[str]] = None  # None: every method
    sparsities: Sequence[float] = (0.5, 0.74, 0.88, 0.95)
    min_accuracy: Optional[float] = None
    finetune_epochs: int = 0           # after one-shot pruning (bingo, magnitude)
    finetune_ramp: Optional[float] = None  # > 1: the fine-tune starts at this many times the
                                       # goal's kept weights and prunes on (bingo.pruning.gradual)
    imp_rate: float = 0.2
    imp_scope: str = "layer"           # output layer at half the rate
    imp_rounds: Optional[int] = None   # at most this many pruning rounds (None: to the last
                                       # target); each is a training run, so the budget
    rewind_step: int = 0
    score_batch: int = 256             # SNIP / GraSP: images in their scoring batch
    synflow_iterations: int = 100      # SynFlow's prune-and-rescore rounds (the paper's 100)
    sanity: bool = False               # also run the sanity checks (bingo.harness.sanity)
    sanity_sparsity: float = 0.88

    def __post_init__(self):
        """The fine-tune ramp is the default way to fine-tune (issue 21's decision: it
        counts as the one fine-tune epoch): None becomes DEFAULT_RAMP when fine-tune
        epochs are asked for without --refit, else 0 (one shot before any fine-tune)."""
        super().__post_init__()
        if self.methods is None:
            self.methods = METHODS
        if self.finetune_ramp is None:
            self.finetune_ramp = (DEFAULT_RAMP if self.finetune_epochs >= 1 and not self.refit
                                  else 0.0)

    def validate(self) -> None:
        self.check_data()
        unknown = [m for m in self.methods if not is_method(m)]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}, "
                             f"or bingo:<estimator> with one of {', '.join(ESTIMATORS)}")
        if not self.methods:
            raise ValueError("no methods given; choose from " + ", ".join(METHODS))
        self.check_estimators(self.row_estimators())
        if self.metric_name == "loss":
            if self.sanity:
                raise ValueError(f"the sanity checks corrupt images and labels: --sanity "
                                 f"does not run on {self.dataset}")
        if self.imp_rounds is not None and self.imp_rounds < 1:
            raise ValueError(f"imp_rounds {self.imp_rounds} must be >= 1 (pruning rounds, each "
                             f"a training run); leave it out to reach the last sparsity")
        if self.synflow_iterations < 1:
            raise ValueError(f"synflow_iterations {self.synflow_iterations} must be >= 1 "
                             f"(100 in Tanaka et al.)")
        for s in self.sparsities:
            if not 0.0 < s < 1.0:
                raise ValueError(f"sparsity {s} is not a fraction in (0, 1)")
        if not self.sparsities and self.min_accuracy is None:
            raise ValueError("give --sparsities, --min-accuracy, or both")
        if any(m in GRADUAL for m in self.methods):
            for s in self.sparsities:
                self.schedule_for(s, 1000)  # the schedule's own checks, before any training
        if self.refit and self.finetune_ramp:
            raise ValueError("--refit solves the kept weights of a one-shot mask, and "
                             "--finetune-ramp changes the mask during the fine-tune: give one")
        if self.finetune_ramp and (self.finetune_ramp <= 1.0 or self.finetune_epochs < 1):
            raise ValueError(f"finetune_ramp {self.finetune_ramp} needs finetune_epochs >= 1 "
                             f"and a value above 1 (e.g. 4: start the fine-tune with 4x the "
                             f"goal's kept weights); 0 prunes in one shot before it")

    def row_estimators(self) -> List[str]:
        """The estimator of each BINGO row (``bingo``: the job's estimator)."""
        return [self.estimator if m == "bingo" else m.split(":", 1)[1]
                for m in self.methods if is_bingo(m)]

    @property
    def name(self) -> str:
        goal = "_".join(f"s{s}" for s in self.sparsities)
        if self.min_accuracy is not None:
            goal += f"_acc{self.min_accuracy}"
        ramp = f"_ramp{self.finetune_ramp}" if self.finetune_ramp else ""
        refit = "_refit" if self.refit else ""
        gradual = (f"_gmp{self.gmp_start}-{self.gmp_end}-{self.gmp_every}{self.margin_tag}"
                   if any(m in GRADUAL for m in self.methods) else "")
        return (f"compare_{self.model}_{self.dataset}_{self.optimizer}{self.lr}_e{self.epochs}_"
                f"b{self.batch_size}_{goal}{refit}_ft{self.finetune_epochs}{ramp}{gradual}_"
                f"seed{self.seed}")
