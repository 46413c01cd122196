"""The pure-PyTorch backend: the executable specification of a search step.

Three operations, with the names every backend mirrors:

* ``subset_masks``      which elements variant k of step t resets (regenerated, never stored);
* ``evaluate_variants`` the metric of the current weights and of each variant;
* ``accumulate``        apply each variant's measured change to the rule's state.

Each operation regenerates the masks it needs from the plan, so nothing of size
K x parameters is ever held: memory stays O(parameters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch

from .rules import Rule, SearchChange, State
from .subsets import subset_mask
from .targets import Target

MetricFn = Callable[[Mapping[str, torch.Tensor]], float]
MasksFn = Callable[..., List[torch.Tensor]]  # subset_masks(plan, variants, targets, device)


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


def variant_chunks(plan: SearchPlan) -> List[range]:
    return [range(a, min(a + VARIANT_CHUNK, plan.variants))
            for a in range(0, plan.variants, VARIANT_CHUNK)]


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


def evaluate_variants(plan: SearchPlan, targets: Sequence[Target],
                      current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                      metric: MetricFn,
                      masks_fn: Optional[MasksFn] = None) -> tuple[float, List[float]]:
    """Metric of the unchanged model, then of each variant, in variant order.

    ``masks_fn`` lets a backend supply its own ``subset_masks`` (same signature).
    """
    masks_fn = masks_fn or subset_masks
    device = current[targets[0].name].device
    before = metric({})
    after = []
    for chunk in variant_chunks(plan):
        masks = masks_fn(plan, chunk, targets, device)
        for j in range(len(chunk)):
            variant = [m[j] for m in masks]
            after.append(metric(variant_tensors(plan, variant, targets, current, initial)))
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
