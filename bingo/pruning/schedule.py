"""Pruning during the one training run: Zhu & Gupta's (2017) cubic sparsity schedule and
the after-step hook every gradual method shares (``ScheduledPruning``).

The hook holds its masks through ``torch.nn.utils.prune`` from the start (identity masks),
so pruned weights are exactly zero in every forward from the event that removed them,
their gradient is zero, and the model is an ordinary pruned model throughout. A subclass
decides only which weights an event removes (``choose``); masks only grow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..engine.distributed import local_module
from ..engine.targets import refresh_masked_reads, torch_pruned
from ..evidence.candidates import lowest
from .masks import PruneReport

Masks = Dict[str, torch.Tensor]  # parameter name -> bool keep-mask of its shape
SCOPES = ("global", "layer")
# The optimizer state that carries a pruned weight's update (Adam's, AdamW's, NAdam's first
# moment; SGD's and RMSprop's momentum): zeroed where an event prunes, it stays exactly 0.
# Second moments are left: the update they scale is then 0, and zeroing them would make
# Adam's sqrt run on zeros, measured 17x slower per element on this CPU than on normal
# floats (they decay by beta2 = 0.999 a step, into denormals only after ~70k steps).
FIRST_MOMENTS = ("exp_avg", "momentum_buffer")


@dataclass(frozen=True)
class CubicSchedule:
    """Sparsity s_t = S (1 - (1 - (t - t0) / (t1 - t0))^3) at the events t = t0, t0 +
    every, ... and t1, where t0 = round(start * total_steps), t1 = round(end * total_steps)
    (Zhu & Gupta 2017, from an initial sparsity of 0); S from t1 on."""

    sparsity: float
    total_steps: int
    start: float = 0.1
    end: float = 0.75
    every: int = 50

    def __post_init__(self):
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"sparsity {self.sparsity} is not a fraction in (0, 1)")
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) \
                or self.total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1 (the optimizer steps of "
                             f"the whole run), got {self.total_steps!r}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(f"start {self.start} and end {self.end} are fractions of the "
                             f"run's steps with 0 <= start < end <= 1 (e.g. 0.1 and 0.75)")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1 (steps between two pruning "
                             f"events), got {self.every!r}")
        if self.last <= self.first:
            raise ValueError(f"the schedule has no room: start and end give steps "
                             f"{self.first} and {self.last} of {self.total_steps}; widen "
                             f"them or train longer")

    @property
    def first(self) -> int:
        return round(self.start * self.total_steps)

    @property
    def last(self) -> int:
        return round(self.end * self.total_steps)

    def at(self, step: int) -> Optional[float]:
        """The sparsity to reach at ``step`` (0-based, counted after each optimizer step) if
        ``step`` is an event, else None."""
        t0, t1 = self.first, self.last
        if step < t0 or step > t1 or ((step - t0) % self.every and step != t1):
            return None
        return self.sparsity * (1.0 - (1.0 - (step - t0) / (t1 - t0)) ** 3)

    def events(self) -> List[int]:
        return [t for t in range(self.first, self.last + 1) if self.at(t) is not None]


def lowest_first(scores: Mapping[str, torch.Tensor], keep: Masks,
                 sparsity: float | Mapping[str, float], scope: str = "global") -> Masks:
    """Keep-masks pruning round(sparsity * n) weights (of all, or of each tensor with
    ``scope="layer"``, or a sparsity per tensor), the already pruned (``keep`` False) first,
    then the kept ones lowest score first, ties by index: masks only grow (the cut:
    :func:`prune_kept`)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    names = list(scores)
    if isinstance(sparsity, Mapping) or scope == "layer":
        out = {}
        for n in names:
            s = sparsity[n] if isinstance(sparsity, Mapping) else sparsity
            out[n] = prune_kept(scores[n].reshape(-1), keep[n].reshape(-1),
                                round(s * keep[n].numel())).view(keep[n].shape)
        return out
    flat = prune_kept(torch.cat([scores[n].detach().reshape(-1) for n in names]),
                      torch.cat([keep[n].reshape(-1) for n in names]),
                      round(sparsity * sum(keep[n].numel() for n in names)))
    pieces = torch.split(flat, [keep[n].numel() for n in names])
    return {n: p.view(keep[n].shape) for n, p in zip(names, pieces)}


def prune_kept(scores: torch.Tensor, keep: torch.Tensor, pruned: int) -> torch.Tensor:
    """A flat keep-mask with ``pruned`` zeros: those of ``keep``, then the lowest
    ``scores`` among the kept, ties by index (what a stable sort would cut); ``keep``
    itself if it prunes more."""
    kept = keep.nonzero().squeeze(1)
    more = pruned - (keep.numel() - kept.numel())
    out = keep.clone()
    if more > 0:
        out[kept[lowest(scores.detach()[kept], more)]] = False
    return out


class ScheduledPruning:
    """After each ``optimizer.step()`` call ``step(x, y)`` (or use it as the training loop's
    ``after_step``); at each event of ``schedule`` the subclass's ``choose(sparsity)``
    returns the new keep-masks, which are installed in the ``weight_mask`` buffers.
    ``finish()`` prunes to the final sparsity if the run stopped early and reports the
    zeros really in the weights. A DistributedDataParallel model is pruned through its
    ``.module`` (the masks' buffers are then the same on every rank because every rank
    takes the same decisions).

    ``optimizer`` (or ``track(optimizer)`` later; the harness's training loop tracks its
    own): at each event the optimizer's first moment of the pruned weights (Adam's
    ``exp_avg``, SGD's momentum: ``FIRST_MOMENTS``) is set to zero. Their gradient is zero
    from then on, so it would otherwise decay geometrically into denormal floats, which CPU
    arithmetic handles many times slower (measured on an Intel VM: LeNet-300-100, Adam,
    98%, gradual magnitude pruning 1.60x plain training without, 1.08-1.11x with;
    docs/results.md). The updates of the kept weights are elementwise and unchanged, so
    every mask and accuracy is the same bit for bit."""

    def __init__(self, model: nn.Module, names: Sequence[str], schedule: CubicSchedule,
                 optimizer: Optional[torch.optim.Optimizer] = None):
        model = local_module(model)
        if not names:
            raise ValueError("no tensors to prune: the model has no Linear/Conv weights "
                             "(or include/exclude left none)")
        self.model, self.names, self.schedule = model, list(names), schedule
        self.step_count = 0
        self.event_seconds = 0.0
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.events: List[Dict[str, float]] = []  # per event: step, sparsity, what chose it
        self._modules = {}
        for name in self.names:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if not torch_pruned(module, attr):
                torch_prune.identity(module, attr)
            self._modules[name] = (module, attr)
        refresh_masked_reads(model)  # attention's out_proj, read by attribute
        if optimizer is not None:
            self.track(optimizer)

    def track(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero ``optimizer``'s per-weight state of the weights each event prunes (see the
        class docstring); the optimizer must hold the masked weights (``weight_orig``)."""
        self.optimizer = checked_optimizer(optimizer, self._modules)

    # what subclasses read and decide
    def keep(self) -> Masks:
        """The keep-masks in force."""
        return {n: getattr(m, a + "_mask") != 0 for n, (m, a) in self._modules.items()}

    def weights(self) -> Dict[str, torch.Tensor]:
        """The weights the forward uses (``weight_orig * weight_mask``), detached."""
        return {n: (getattr(m, a + "_orig") * getattr(m, a + "_mask")).detach()
                for n, (m, a) in self._modules.items()}

    def choose(self, sparsity: float) -> Masks:
        raise NotImplementedError

    def note(self) -> Dict[str, float]:
        """What the last ``choose`` measured, for ``events`` (subclasses may add)."""
        return {}

    # the hook
    def step(self, inputs: Optional[torch.Tensor] = None,
             targets: Optional[torch.Tensor] = None) -> Optional[float]:
        """Count one training step; prune if it is an event. Returns the event's sparsity."""
        s = self.schedule.at(self.step_count)
        self.step_count += 1
        if s is not None:
            self._prune_to(s)
        return s

    __call__ = step

    def finish(self) -> PruneReport:
        """Prune to the schedule's final sparsity if an event was missed (a short run), and
        report the zeros in the weights the forward uses."""
        if self.step_count <= self.schedule.last:
            self._prune_to(self.schedule.sparsity)
        report = PruneReport(sparsity=0.0, layers={})
        return report.recount(self.model, self.names)

    @torch.no_grad()
    def _prune_to(self, sparsity: float) -> None:
        start = time.perf_counter()
        before = self.keep()
        masks = self.choose(sparsity)
        for name, (module, attr) in self._modules.items():
            keep = masks[name] & before[name]  # masks only grow
            mask = getattr(module, attr + "_mask")
            mask.copy_(keep.to(mask.dtype))
            orig = getattr(module, attr + "_orig")
            setattr(module, attr, orig * mask)  # as the hook would
            if self.optimizer is not None:
                zero_first_moments(self.optimizer, orig, keep)
        seconds = time.perf_counter() - start
        self.event_seconds += seconds
        self.events.append({"step": self.step_count - 1, "sparsity": sparsity,
                            "seconds": seconds, **self.note()})


def checked_optimizer(optimizer: torch.optim.Optimizer,
                      modules: Mapping[str, tuple]) -> torch.optim.Optimizer:
    """``optimizer``, refused by name unless it holds every masked weight (``weight_orig``)
    of ``modules`` ({name: (module, attribute)})."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, (m, a) in modules.items() if id(getattr(m, a + "_orig")) not in held]
    if missing:
        raise ValueError(f"the optimizer does not hold the pruned weights of {missing}: "
                         f"build it from model.parameters() (the masked weights are "
                         f"the `weight_orig` parameters)")
    return optimizer


def zero_first_moments(optimizer: torch.optim.Optimizer, weight: torch.Tensor,
                       keep: torch.Tensor) -> None:
    """``optimizer``'s first moments (``FIRST_MOMENTS``) of ``weight`` set to 0 where
    ``keep`` is False (see ``ScheduledPruning``)."""
    for key, value in optimizer.state.get(weight, {}).items():
        if key in FIRST_MOMENTS and torch.is_tensor(value) and value.shape == weight.shape:
            value.masked_fill_(~keep, 0)
