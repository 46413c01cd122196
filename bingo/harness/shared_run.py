"""What every method of ``bingo compare`` shares (``Harness``): the data, fresh models with
the same initial weights, the training loop, evaluation; and a method's result."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..engine.targets import select_targets
from ..pruning.masks import count_zeros
from .data import batches, load_dataset
from .models import build_model
from .training import evaluate

if TYPE_CHECKING:
    from .compare_job import CompareJob


@dataclass
class MethodResult:
    method: str
    points: List[Dict[str, float]] = field(default_factory=list)  # sparsity, val/test accuracy
    threshold: Optional[Dict[str, Any]] = None                    # what the floor allowed
    dense_test_accuracy: Optional[float] = None
    dense_val_accuracy: Optional[float] = None
    dense_val_loss: Optional[float] = None                        # text runs (loss metric)
    seconds: float = 0.0                                          # the method's whole run
    history: List[Dict[str, Any]] = field(default_factory=list)   # IMP rounds


class Harness:
    """What every method shares: data, fresh models with the same initial weights,
    the training loop, evaluation."""

    def __init__(self, job: "CompareJob", progress: bool, log: Callable[[str], None]):
        self.job, self.progress, self.log = job, progress, log
        self.data = load_dataset(job.dataset, job.data_dir).to(job.torch_device)
        self.train_split = self.data.train.subset(job.train_limit)
        self.metric = self.data.metric  # accuracy (images) or loss (text: lower is better)
        # a point's headline figure: test accuracy, or (text has no test split) val loss
        self.headline = "val_loss" if self.metric == "loss" else "test_accuracy"
        self.search_backend: Optional[str] = None  # set once BINGO has searched
        self.searched: Dict[str, Any] = {}  # granularity -> (model, search, seconds)
        self.calibrations: List[Dict[str, Any]] = []  # what each calibrated scoring chose
        self.regression: Optional[Dict[str, Any]] = None  # the regression row's fit
        self._dense: Optional[tuple] = None  # (model, its last (inputs, labels), seconds)

    def fresh(self, seed: Optional[int] = None) -> nn.Module:
        """The model at its initial weights (the same for every method, given the seed)."""
        torch.manual_seed(self.job.seed if seed is None else seed)
        return build_model(self.job.model).to(self.job.torch_device)  # drawn on the CPU

    def target_names(self) -> List[str]:
        return [t.name for t in select_targets(self.fresh())]

    def with_train(self, split) -> "Harness":
        """The same harness training on another split (the sanity checks' corrupted data)."""
        other = copy.copy(self)
        other.train_split = split
        other.searched, other.calibrations, other._dense = {}, [], None
        return other

    def train(self, model: nn.Module, epochs: Optional[int] = None, after_step=None,
              description: str = "train"):
        return self.job.fit(model, self.train_split, epochs=epochs, after_step=after_step,
                            progress=self.progress, description=description)

    def dense(self) -> tuple:
        """The dense model trained once (shared by magnitude, hybrid and the layer-wise
        rows), the last ``calibration`` (inputs, labels) its training saw, and the seconds
        its training took if this call reused it (0 for the row that trained it). A BINGO
        run already trained serves as it, where its search kept as many examples: the
        search changes no weight, buffer, random state or data order, so that training is
        bit for bit this one (tests/test_compare_shared.py) and need not run twice."""
        if self._dense is not None:
            return self._dense
        self._dense = self._searched_run()
        if self._dense is not None:
            return self._dense
        self._dense = self._train_dense()
        return (*self._dense[:2], 0.0)

    def _searched_run(self) -> Optional[tuple]:
        """A BINGO run of this harness as the dense run, if its search kept the examples
        the dense run would keep."""
        from ..engine.search import DEFAULT_CALIBRATION
        kept = self.job.calibration or DEFAULT_CALIBRATION
        if not self.searched or self.job.search_calibration != kept:
            return None
        model, search, seconds = next(iter(self.searched.values()))
        return model, search.kept_examples(), seconds

    def _train_dense(self) -> tuple:
        """Train the dense model, keeping its last ``calibration`` examples."""
        from ..engine.calibration import CalibrationBuffer
        from ..engine.distributed import Ranks
        from ..engine.search import DEFAULT_CALIBRATION
        start = time.perf_counter()
        model = self.fresh()
        recent = CalibrationBuffer(self.job.calibration or DEFAULT_CALIBRATION, Ranks())
        self.train(model, after_step=recent.add, description="train dense")
        return model, recent.everywhere(), time.perf_counter() - start  # every rank's

    def val(self, model: nn.Module) -> float:
        return evaluate(model, self.data.val, self.metric)

    def test(self, model: nn.Module) -> float:
        return evaluate(model, self.data.test, self.metric)

    def figures(self, model: nn.Module) -> Dict[str, float]:
        """What a point records: validation and test accuracy (and CIFAR-10's exact test
        images'), or for text the validation loss."""
        if self.metric == "loss":
            return {"val_loss": self.val(model)}
        return {"val_accuracy": self.val(model), "test_accuracy": self.test(model),
                **self.exact(model)}

    def set_dense(self, result: MethodResult, model: nn.Module) -> None:
        """The dense model's figures, into ``result``."""
        if self.metric == "loss":
            result.dense_val_loss = self.val(model)
        else:
            result.dense_test_accuracy, result.dense_val_accuracy = (self.test(model),
                                                                     self.val(model))

    def exact(self, model: nn.Module) -> Dict[str, float]:
        """CIFAR-10's accuracy on the 1,000 test images known pixel-exact (the rest of the
        shared test set is decoded JPEGs), beside the full test set's; {} elsewhere."""
        if self.data.test_exact is None:
            return {}
        return {"test_exact_accuracy": evaluate(model, self.data.test_exact, "accuracy")}

    def point(self, result: MethodResult, model: nn.Module, sparsity: float,
              **extra: Any) -> None:
        p = {"sparsity": sparsity, "zeros": zero_share(model), **self.figures(model), **extra}
        result.points.append(p)
        self.log(f"  {result.method:12s} sparsity {sparsity:.3f}: "
                 f"{self.headline.replace('_', ' ')} {p[self.headline]:.4f}")

    def scoring_batch(self):
        n = min(self.job.score_batch, len(self.train_split))
        return next(batches(self.train_split, n, shuffle=False))


def zero_share(model: nn.Module) -> float:
    """The share of the prunable weights that are exactly zero: what a point really holds
    (a refit can zero kept weights beyond the goal's mask)."""
    layers = count_zeros(model, [t.name for t in select_targets(model)]).values()
    return sum(x.zeros for x in layers) / sum(x.numel for x in layers)
