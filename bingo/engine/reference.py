"""The pure-PyTorch backend: the executable specification of a search step.

Operations, with the names every backend mirrors:

* ``subset_masks``      which elements variant k of step t resets (regenerated, never stored);
* ``masked_weights``    one target's K variant tensors where(mask, initial, current);
* ``linear_variants``   a Linear layer's output under each of K variants, for a shared or
                        per-variant input (what the batched evaluation is built from);
* ``evaluate_variants`` the metric of the current weights and of each variant;
* ``accumulate``        apply each variant's measured change to the rule's state;
* ``proxy_update``      fold one training step's gradient into the per-weight proxies
                        (:mod:`bingo.engine.proxies`);
* ``movement_update``   the movement proxy alone (the steps between two full updates).

Each operation regenerates the masks it needs from the plan, so nothing of size
K x parameters is ever held: memory stays O(parameters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .losses import is_cross_entropy
from .rules import Rule, SearchChange, State
from .subsets import subset_mask
from .targets import Target

MasksFn = Callable[..., List[torch.Tensor]]  # subset_masks(plan, variants, targets, device)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SearchPlan:
    """Everything that fixes the subsets of one search step."""

    seed: int
    step: int
    variants: int
    threshold: int      # byte threshold, fraction = threshold / 256
    granularity: str    # "weight" or "neuron"
    total: int          # size of the global element index space


# Variants whose masks are generated together: one Philox pass over a chunk is
# ~4x cheaper than one per variant in eager PyTorch, and 8 bool masks cost 8
# bytes per weight, the size of a packed 64-bit mask, so memory stays O(parameters).
VARIANT_CHUNK = 8


def variant_chunks(plan: SearchPlan, size: int = VARIANT_CHUNK) -> List[range]:
    return [range(a, min(a + size, plan.variants)) for a in range(0, plan.variants, size)]


@dataclass
class SearchBatch:
    """The batch a search step is measured on: the borrowed model, its inputs and the metric."""

    model: nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    metric: str          # "loss" or "accuracy"
    loss_fn: LossFn
    variants: Optional[Sequence[int]] = None  # the ones this process evaluates (None: all)

    def chunks(self, plan: SearchPlan, size: int = VARIANT_CHUNK) -> List[Sequence[int]]:
        """The variants this process evaluates (all, or a rank's share), ``size`` at a time."""
        if self.variants is None:
            return variant_chunks(plan, size)
        owned = list(self.variants)
        return [owned[a:a + size] for a in range(0, len(owned), size)]

    def score(self, outputs: torch.Tensor) -> torch.Tensor:
        """The metric of each leading slice of ``outputs`` [V, B, classes], as a [V] tensor."""
        v = outputs.shape[0]
        if self.metric == "accuracy":
            hits = outputs.argmax(dim=-1) == self.labels
            return hits.to(torch.float64).reshape(v, -1).mean(dim=1)
        if is_cross_entropy(self.loss_fn):  # one call for all variants
            labels = self.labels.expand(v, *self.labels.shape).flatten()
            losses = F.cross_entropy(outputs.flatten(0, -2), labels, reduction="none")
            return losses.view(v, -1).mean(dim=1)
        return torch.stack([self.loss_fn(o, self.labels).reshape(()) for o in outputs])

    def evaluate(self, overrides: Mapping[str, torch.Tensor]) -> float:
        """The metric of the model with ``overrides`` substituted for its parameters."""
        outputs = functional_call(self.model, dict(overrides), (self.inputs,))
        return float(self.score(outputs.unsqueeze(0))[0])


def subset_masks(plan: SearchPlan, variants: Sequence[int], targets: Sequence[Target],
                 device: torch.device) -> List[torch.Tensor]:
    """Per target, bool [len(variants), target.size]: the elements each variant resets."""
    flat = subset_mask(plan.seed, plan.step, variants, 0, plan.total, plan.threshold, device)
    return [flat[:, t.offset:t.offset + t.size] for t in targets]


def variant_tensors(plan: SearchPlan, masks: Sequence[torch.Tensor], targets: Sequence[Target],
                    current: Mapping[str, torch.Tensor],
                    initial: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The tensors a variant substitutes: where(mask, initial, current), plus biases per unit."""
    out: Dict[str, torch.Tensor] = {}
    for t, m in zip(targets, masks):
        if plan.granularity == "weight":
            full = m.view(t.shape)
        else:
            full = t.expand_units(m)
            if t.bias_name is not None:
                out[t.bias_name] = torch.where(m, initial[t.bias_name], current[t.bias_name])
        out[t.name] = torch.where(full, initial[t.name], current[t.name])
    return out


def target_masks(plan: SearchPlan, variants: Sequence[int], target: Target,
                 device: torch.device) -> torch.Tensor:
    """Bool [len(variants), *shape]: the weights of one target each variant resets."""
    m = subset_mask(plan.seed, plan.step, variants, target.offset, target.size, plan.threshold,
                    device)
    if plan.granularity == "weight":
        return m.view((len(variants),) + tuple(target.shape))
    return m.view((len(variants), target.units) + (1,) * (len(target.shape) - 1)).expand(
        (len(variants),) + tuple(target.shape))


def masked_weights(plan: SearchPlan, variants: Sequence[int], target: Target,
                   weight: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """[len(variants), *shape]: variant k's tensor, where(mask_k, initial, weight)."""
    return torch.where(target_masks(plan, variants, target, weight.device), initial, weight)


def variant_bias(plan: SearchPlan, variants: Sequence[int], target: Target,
                 bias: Optional[torch.Tensor],
                 initial_bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Each variant's bias [len(variants), units]; None at weight granularity (bias unchanged)."""
    if bias is None or plan.granularity == "weight":
        return None
    m = subset_mask(plan.seed, plan.step, variants, target.offset, target.size, plan.threshold,
                    bias.device)
    return torch.where(m, initial_bias, bias)


def linear_variants(plan: SearchPlan, variants: Sequence[int], target: Target,
                    x: torch.Tensor, weight: torch.Tensor, initial: torch.Tensor,
                    bias: Optional[torch.Tensor], initial_bias: Optional[torch.Tensor],
                    base: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[V, B, out]: a Linear layer's output under each variant.

    ``x`` is [B, in] (the same input for every variant) or [V, B, in]. ``base`` may
    carry F.linear(x, weight, bias) for a shared input; backends may use it, this
    specification ignores it.
    """
    w = masked_weights(plan, variants, target, weight, initial)
    out = torch.matmul(x, w.transpose(1, 2))
    b = variant_bias(plan, variants, target, bias, initial_bias)
    if b is not None:
        return out + b.unsqueeze(1)
    return out if bias is None else out + bias


def evaluate_variants(plan: SearchPlan, targets: Sequence[Target],
                      current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                      batch: SearchBatch,
                      masks_fn: Optional[MasksFn] = None) -> tuple[float, List[float]]:
    """Metric of the unchanged model, then of each variant, in variant order (of the
    batch's own ``variants`` where it names them: a rank's share).

    One functional call per variant: this loop is the specification. ``masks_fn``
    lets a backend supply its own ``subset_masks`` (same signature).
    """
    masks_fn = masks_fn or subset_masks
    device = current[targets[0].name].device
    before = batch.evaluate({})
    after = []
    for chunk in batch.chunks(plan):
        masks = masks_fn(plan, chunk, targets, device)
        for j in range(len(chunk)):
            variant = [m[j] for m in masks]
            after.append(batch.evaluate(variant_tensors(plan, variant, targets, current, initial)))
    return before, after


def accumulate(plan: SearchPlan, targets: Sequence[Target], rule: Rule,
               states: Sequence[State], changes: Sequence[SearchChange]) -> None:
    """Update every target's rule state with the K searches of this step, in variant order."""
    device = next(iter(states[0].values())).device
    for chunk in variant_chunks(plan):
        masks = subset_masks(plan, chunk, targets, device)
        for j, k in enumerate(chunk):
            for state, mask in zip(states, masks):
                rule.update(state, mask[j], changes[k])


def proxy_update(fisher: Sequence[torch.Tensor], reset: Sequence[torch.Tensor],
                 movement: Optional[Sequence[torch.Tensor]], grad: Sequence[torch.Tensor],
                 weight: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                 decay: float) -> None:
    """One step's proxies for a list of tensors (one entry per target, like torch's
    ``_foreach`` ops), in place: fisher <- decay * fisher + g², reset += |g (target - w)|,
    movement -= g w (``target``: what a search resets to, the initial values or zeros;
    ``movement`` None: a search that does not collect it)."""
    for i, (f, r, g, w, t) in enumerate(zip(fisher, reset, grad, weight, target, strict=True)):
        f.mul_(decay).addcmul_(g, g)
        r.add_(torch.abs(g * (t - w)))
        if movement is not None:
            movement[i].sub_(g * w)


def movement_update(movement: Sequence[torch.Tensor], grad: Sequence[torch.Tensor],
                    weight: Sequence[torch.Tensor]) -> None:
    """The movement proxy alone, in place: movement -= g w (one entry per target)."""
    for m, g, w in zip(movement, grad, weight, strict=True):
        m.sub_(g * w)
