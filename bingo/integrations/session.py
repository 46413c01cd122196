"""What a framework's callback drives (``PruningSession``): a ``GradualTicketPruning``
(``schedule="gradual"``: prune during the run on the cubic schedule) or a ``TicketSearch``
(``schedule="end"``: score during the run, prune once when it ends), built when the fit
starts, stepped after each optimizer step, finished at the end. Under DDP it spans the
ranks as the plain-loop API does (:mod:`bingo.engine.distributed`)."""
from __future__ import annotations

import warnings

from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..engine.borrow import batchnorm_layers
from ..evidence.ticket_search import TicketSearch
from ..pruning.batchnorm import recalibrate_batchnorm
from ..pruning.gradual_ticket import DEFAULT_CANDIDATES, GradualTicketPruning
from ..pruning.masks import PruneReport, prune

SCHEDULES = ("gradual", "end")


class PruningSession:
    """``begin(model, total_steps)``, then ``step(x, y)`` after every optimizer step, then
    ``finish(permanent)`` -> the PruneReport (``permanent``: the masks folded into the
    weights by ``torch.nn.utils.prune.remove``; the pruned weights stay zeros)."""

    def __init__(self, amount: float, *, schedule: str = "gradual", start: float = 0.1,
                 end: float = 0.75, every: int = 50,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES,
                 estimator: str = "calibrated", **search_options: Any):
        if not isinstance(amount, float) or not 0.0 < amount < 1.0:
            raise ValueError(f"amount is the final sparsity, a float in (0, 1) (e.g. 0.9), "
                             f"got {amount!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} (prune during the run, or "
                             f"once at its end), got {schedule!r}")
        self.amount, self.schedule = amount, schedule
        self.gradual = dict(start=start, end=end, every=every, candidates=tuple(candidates))
        self.estimator, self.search_options = estimator, search_options
        self.pruner: Optional[GradualTicketPruning] = None
        self.search: Optional[TicketSearch] = None
        self.report: Optional[PruneReport] = None

    def begin(self, model: nn.Module, total_steps: int) -> None:
        if self.schedule == "gradual":
            self.pruner = GradualTicketPruning(model, sparsity=self.amount,
                                               total_steps=total_steps, **self.gradual,
                                               **self.search_options)
            self.search = self.pruner.search
        else:
            self.search = TicketSearch(model, **self.search_options)

    def track(self, optimizer: Any) -> None:
        """Let the gradual pruner zero ``optimizer``'s first moments of the weights it
        prunes (``ScheduledPruning.track``: the same run, faster on a CPU); a framework's
        wrapper (``.optimizer``) is looked through, and an optimizer that does not hold the
        masked weights is left untracked with a warning."""
        if self.pruner is None or optimizer is None:
            return
        while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
            optimizer = optimizer.optimizer
        try:
            self.pruner.track(optimizer)
        except (ValueError, AttributeError, TypeError) as error:
            warnings.warn(f"bingo could not track the optimizer ({error}); the pruned weights' "
                          f"optimizer state then decays on its own: the same masks, slower "
                          f"on a CPU", RuntimeWarning, stacklevel=2)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.search is None:
            raise RuntimeError("the pruning session was not started: begin(model, "
                               "total_steps) comes first (the callback's fit-start hook)")
        (self.pruner or self.search).step(inputs, targets)

    def finish(self, permanent: bool = False) -> PruneReport:
        if self.pruner is not None:
            self.report = self.pruner.finish()
        else:
            scores = self.search.significance(self.estimator, sparsity=self.amount)
            self.report = prune(self.search.model, scores, sparsity=self.amount)
            if batchnorm_layers(self.search.model):  # as measured: the kept examples'
                # own statistics
                recalibrate_batchnorm(self.search.model, self.search.kept_examples()[0])
        if permanent:
            self.make_permanent()
        return self.report

    def summary(self) -> str:
        """The line a verbose callback prints at the end."""
        return (f"bingo: pruned {self.report.sparsity:.2%} of the prunable weights "
                f"({self.schedule} schedule)")

    def make_permanent(self) -> None:
        model = self.search.model
        for t in self.search.targets:
            module = model.get_submodule(t.module_name)
            if hasattr(module, t.attr + "_mask"):
                torch_prune.remove(module, t.attr)
