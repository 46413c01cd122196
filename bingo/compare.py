"""``bingo compare``: every pruning method on one harness (same data, model, initial
weights, training loop and evaluation), at a grid of sparsities and/or at an accuracy
floor. Writes results.json, results.md (the table) and accuracy_vs_sparsity.png.

How each family meets a sparsity s (test accuracy reported, choices made on validation):

* after training, one shot (``bingo``, ``magnitude``): train once (BINGO with its ticket
  search), then prune the trained weights to s, optionally refit the kept weights by least
  squares (``--refit``, on the last ``calibration`` examples its training saw: the same
  images for every method, and for BINGO the ones its estimator measured), optionally
  fine-tune. ``bingo`` scores
  with the job's estimator; ``bingo:<estimator>`` rows score the same training run with
  another (bingo.estimators), except ``bingo:units``, whose neuron searches need a run
  of their own. A row's seconds include the shared training;
* at initialization (``random``, ``smart-ratio``, ``snip``, ``grasp``, ``synflow``): mask
  the initial weights to s, then train with the mask enforced (one training per s);
* ``hybrid`` (Su et al.): train dense, keep the largest weights within smart-ratio layer
  budgets, retrain from the trained weights at the initial learning rate (rewinding);
* ``imp``: rounds of magnitude pruning with rewinding (bingo.baselines.imp);
* during the one training run (``gmp``, ``gmp-layer``, ``bingo-gradual``): prune on the
  cubic schedule (``gmp_start``, ``gmp_end``, ``gmp_every``) while training, one run per s
  (bingo.baselines.gmp, bingo.gradual_ticket);
* layer-wise one shot (``wanda``, ``sparsegpt``): the dense model trained once, then each
  layer in forward order pruned on the last ``calibration`` examples its training saw,
  uniform layer sparsity, the last layer dense (bingo.baselines.layerwise).

The runners live in :mod:`bingo.methods`, the shared harness in :mod:`bingo.harness`.

At a floor (``min_accuracy``): BINGO and magnitude bisect the sparsity on validation;
IMP prunes round after round until validation accuracy falls below it; the others, which
train once per sparsity, report the largest grid sparsity that stays above it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from .estimators import ESTIMATORS
from .harness import Harness, MethodResult
from .jobs import RunSetup, environment
from .methods import GRADUAL, METHODS, RUNNERS, _is_bingo, is_method

DEFAULT_RAMP = 4.0  # the measured D of the fine-tune ramp (docs/results.md)


@dataclass
class CompareJob(RunSetup):
    """One comparison: the shared setup (data, model, training, BINGO's search) and each
    method's own knobs."""

    methods: Sequence[str] = METHODS
    sparsities: Sequence[float] = (0.5, 0.74, 0.88, 0.95)
    min_accuracy: Optional[float] = None
    finetune_epochs: int = 0           # after one-shot pruning (bingo, magnitude)
    finetune_ramp: Optional[float] = None  # > 1: the fine-tune starts at this many times the
                                       # goal's kept weights and prunes on (bingo.gradual)
    imp_rate: float = 0.2
    imp_scope: str = "layer"           # output layer at half the rate
    rewind_step: int = 0
    score_batch: int = 256             # SNIP / GraSP: images in their scoring batch
    sanity: bool = False               # also run the sanity checks (bingo.sanity)
    sanity_sparsity: float = 0.88

    def __post_init__(self):
        """The fine-tune ramp is the default way to fine-tune (issue 21's decision: it
        counts as the one fine-tune epoch): None becomes DEFAULT_RAMP when fine-tune
        epochs are asked for without --refit, else 0 (one shot before any fine-tune)."""
        if self.finetune_ramp is None:
            self.finetune_ramp = (DEFAULT_RAMP if self.finetune_epochs >= 1 and not self.refit
                                  else 0.0)

    def validate(self) -> None:
        unknown = [m for m in self.methods if not is_method(m)]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}, "
                             f"or bingo:<estimator> with one of {', '.join(ESTIMATORS)}")
        if not self.methods:
            raise ValueError("no methods given; choose from " + ", ".join(METHODS))
        self.check_estimators(self.row_estimators())
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
                for m in self.methods if _is_bingo(m)]

    @property
    def name(self) -> str:
        goal = "_".join(f"s{s}" for s in self.sparsities)
        if self.min_accuracy is not None:
            goal += f"_acc{self.min_accuracy}"
        ramp = f"_ramp{self.finetune_ramp}" if self.finetune_ramp else ""
        refit = "_refit" if self.refit else ""
        gradual = (f"_gmp{self.gmp_start}-{self.gmp_end}-{self.gmp_every}"
                   if any(m in GRADUAL for m in self.methods) else "")
        return (f"compare_{self.model}_{self.dataset}_{self.optimizer}{self.lr}_e{self.epochs}_"
                f"b{self.batch_size}_{goal}{refit}_ft{self.finetune_epochs}{ramp}{gradual}_"
                f"seed{self.seed}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_compare(job: CompareJob, progress: bool = True,
                log: Callable[[str], None] = _stderr) -> Dict[str, Any]:
    """Run every method of ``job``; returns the JSON-able results."""
    job.validate()
    wall = time.perf_counter()
    h = Harness(job, progress, log)
    results: List[MethodResult] = []
    for i, method in enumerate(job.methods, start=1):
        log(f"[{i}/{len(job.methods)}] {method}")
        result = MethodResult(method)
        start = time.perf_counter()
        RUNNERS[method](h, result)
        result.seconds += time.perf_counter() - start
        results.append(result)
    sanity = []
    if job.sanity:
        from .sanity import run_sanity
        for i, method in enumerate(job.methods, start=1):
            log(f"[sanity {i}/{len(job.methods)}] {method} at {job.sanity_sparsity}")
            sanity.append(run_sanity(h, method, job.sanity_sparsity))
    return {"name": job.name, "sanity": sanity, "config": asdict(job) | {"methods": list(job.methods),
                                                      "sparsities": list(job.sparsities)},
            "methods": [asdict(r) for r in results], "total_seconds": time.perf_counter() - wall,
            "calibrations": h.calibrations, "regression": h.regression,
            "environment": environment() | {"search_backend": h.search_backend}}
