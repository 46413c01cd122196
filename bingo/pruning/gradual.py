"""Gradual pruning inside a fine-tune: each layer's sparsity rises along Zhu & Gupta's
(2017) cubic schedule to its budget, the smallest-magnitude weights still kept going first.

Why: one-shot pruning of LeNet-300-100 to 95% followed by one fine-tune epoch lands
0.37 points below IMP (four seeds); starting the epoch from the method's own mask at
4x the goal's kept weights and pruning on to the method's layer budgets during its
first half brings it to 0.07 below (0.33 at worst; docs/results.md, *One fine-tune
epoch against IMP*). Masks only grow, through ``torch.nn.utils.prune`` buffers, so the
model stays an ordinary pruned model.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..engine.targets import refresh_masked_reads, torch_pruned
from .masks import copy_model, prune
from .schedule import checked_optimizer, zero_first_moments

RAMP_SHARE = 0.5  # of the fine-tune's steps the ramp takes; the rest trains at the goal
EVERY = 10        # training steps between two pruning events


class GradualPruning:
    """An after-step hook (``train(..., after_step=ramp)``, or call it after each
    ``optimizer.step()``) that prunes each named tensor from its current sparsity to
    ``budgets[name]`` over ``steps`` calls: at call i (every ``every``-th, and at the
    end) a layer holds round(numel * (b + (s0 - b) * (1 - i/steps)^3)) pruned weights,
    s0 its sparsity when the ramp was built. ``finish()`` jumps to the budgets.
    ``optimizer`` (or ``track(optimizer)``; the harness's loop passes its own): its first
    moments of the weights each call prunes are zeroed, as ``ScheduledPruning`` does."""

    def __init__(self, model: nn.Module, budgets: Mapping[str, float], steps: int,
                 every: int = EVERY, optimizer: Optional[torch.optim.Optimizer] = None):
        if steps < 1 or every < 1:
            raise ValueError(f"steps and every must be >= 1, got {steps}, {every}")
        if not budgets:
            raise ValueError("budgets is empty: name the tensors to prune, {name: sparsity}")
        self.steps, self.every, self.calls = steps, every, 0
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.layers: Dict[str, tuple] = {}  # name -> (module, attr, start count, goal count)
        for name, budget in budgets.items():  # every check before the model is touched
            if not 0.0 <= budget <= 1.0:
                raise ValueError(f"budget for {name!r} is {budget}; give a sparsity in [0, 1]")
            module_name, _, attr = name.rpartition(".")
            try:
                module = model.get_submodule(module_name)
            except AttributeError:
                raise KeyError(f"budgets name {name!r} but the model has no module "
                               f"{module_name!r}") from None
            weight = getattr(module, attr, None)
            if not isinstance(weight, torch.Tensor):
                raise KeyError(f"budgets name {name!r} but the model has no such parameter")
            mask = getattr(module, attr + "_mask", None)
            start = 0 if mask is None else int((mask == 0).sum())
            goal = round(budget * weight.numel())
            if goal < start:
                raise ValueError(f"{name!r} is already {start / weight.numel():.2%} pruned, "
                                 f"above its budget {budget:.2%}; masks only grow, so raise "
                                 f"the budget")
            self.layers[name] = (module, attr, start, goal)
        for module, attr, _, _ in self.layers.values():
            if not torch_pruned(module, attr):
                torch_prune.identity(module, attr)
        refresh_masked_reads(model)  # attention's out_proj, read by attribute
        if optimizer is not None:
            self.track(optimizer)

    def track(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero ``optimizer``'s first moments of the weights each call prunes."""
        self.optimizer = checked_optimizer(
            optimizer, {n: (m, a) for n, (m, a, _, _) in self.layers.items()})

    def __call__(self, x: object = None, y: object = None) -> None:
        i = self.calls
        self.calls += 1
        if i <= self.steps and (i % self.every == 0 or i == self.steps):
            self._prune_to(1.0 - (1.0 - min(1.0, i / self.steps)) ** 3)

    def finish(self) -> None:
        """Prune every layer to its budget now (when training stopped before the ramp)."""
        self._prune_to(1.0)

    @torch.no_grad()
    def _prune_to(self, progress: float) -> None:
        for module, attr, start, goal in self.layers.values():
            mask = getattr(module, attr + "_mask")
            orig = getattr(module, attr + "_orig")
            more = round(start + (goal - start) * progress) - int((mask == 0).sum())
            if more > 0:
                size = torch.where(mask != 0, orig.abs(), torch.full_like(orig, torch.inf))
                lowest = torch.sort(size.reshape(-1), stable=True).indices[:more]
                flat = mask.reshape(-1).clone()
                flat[lowest] = 0
                mask.copy_(flat.view_as(mask))
                if self.optimizer is not None:
                    zero_first_moments(self.optimizer, orig, mask != 0)
            setattr(module, attr, orig * mask)  # as the forward pre-hook would


def ramp_from_scores(model: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: float,
                     density: float, steps: int) -> GradualPruning:
    """Prune ``model`` by ``scores`` to ``density`` times the goal's kept weights (dense
    if that is all of them) and return the ramp on to the layer budgets that ``scores``
    give at ``sparsity`` (the two masks are nested: one global ranking)."""
    if density <= 1.0:
        raise ValueError(f"density {density} must exceed 1: the ramp starts with that many "
                         f"times the goal's kept weights")
    goal = prune(copy_model(model), scores, sparsity=sparsity)
    prune(model, scores, sparsity=max(0.0, 1.0 - density * (1.0 - sparsity)))
    return GradualPruning(model, {n: layer.pruned / layer.numel  # the masks' budgets
                                  for n, layer in goal.layers.items()}, steps)
