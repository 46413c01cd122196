"""Gradual magnitude pruning (Zhu & Gupta 2017) inside the training run: at each event
of the cubic schedule the smallest-magnitude weights still kept are pruned, over every
target at once (``scope="global"``) or each to the same sparsity (``"layer"``), or over
every target at once by LAMP scores (``"lamp"``, Lee et al. 2021: each layer's magnitudes
made comparable across layers, so no layer is emptied); pruned weights stay exactly zero
(``torch.nn.utils.prune`` masks) to the end. The strongest
baseline at the same training budget (docs/results.md)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ...engine.targets import select_targets
from ...evidence.candidates import lamp_scores
from ...pruning.schedule import (
    SCOPES,
    CubicSchedule,
    Masks,
    ScheduledPruning,
    lowest_first,
)

GMP_SCOPES = SCOPES + ("lamp",)


class GradualMagnitudePruning(ScheduledPruning):
    """``GradualMagnitudePruning(model, sparsity=0.95, total_steps=n)``; call ``step()``
    after each ``optimizer.step()`` and ``finish()`` at the end (see ScheduledPruning)."""

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 start: float = 0.1, end: float = 0.75, every: int = 50,
                 scope: str = "global", include: Optional[Sequence[str]] = None,
                 exclude: Optional[Sequence[str]] = None,
                 optimizer: Optional[torch.optim.Optimizer] = None):
        if scope not in GMP_SCOPES:
            raise ValueError(f"scope must be one of {GMP_SCOPES} (one magnitude ranking over "
                             f"every layer, each layer to the same sparsity, or one LAMP "
                             f"ranking over every layer), got {scope!r}")
        schedule = CubicSchedule(sparsity, total_steps, start, end, every)
        names = [t.name for t in select_targets(model, include=include, exclude=exclude)]
        super().__init__(model, names, schedule, optimizer)
        self.scope = scope
        # LAMP is cut globally and as float32, as bingo-gradual's ``lamp`` candidate cuts it
        # (the same masks); the weights read are 0 where pruned, so LAMP is over the kept
        self._score = (lambda w: lamp_scores(w).float()) if scope == "lamp" else torch.abs
        self._cut = "global" if scope == "lamp" else scope

    def choose(self, sparsity: float) -> Masks:
        return lowest_first({n: self._score(w) for n, w in self.weights().items()},
                            self.keep(), sparsity, self._cut)
