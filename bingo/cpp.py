"""The C++ CPU backend (``bingo._cpu``, built from csrc/): same operations as
:mod:`bingo.reference`, bit-identical results.

Built today: subset masks and the fused accumulation of the "paper" and "mean"
rule families (one pass over the state per step, regenerating each element's K
decisions in registers). Evaluation runs the reference algorithm on C++ masks;
the batched low-rank evaluation of issue 3 is still to come. Float64 states fall
back to the reference.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from . import reference
from .reference import SearchPlan
from .rules import MeanRule, PaperRule, Rule, SearchChange, State
from .targets import Target

try:
    from . import _cpu
except ImportError:  # not built (no compiler at install time)
    _cpu = None


def available() -> bool:
    return _cpu is not None


def subset_masks(plan: SearchPlan, variants: Sequence[int], targets: Sequence[Target],
                 device: torch.device) -> List[torch.Tensor]:
    """Per target, bool [len(variants), target.size]: the elements each variant resets."""
    flat = torch.from_numpy(_cpu.subset_masks(plan.seed, plan.step, list(variants), 0,
                                              plan.total, plan.threshold))
    return [flat[:, t.offset:t.offset + t.size] for t in targets]


def evaluate_variants(plan, targets, current, initial, metric):
    """The reference evaluation, with masks from C++."""
    return reference.evaluate_variants(plan, targets, current, initial, metric,
                                       masks_fn=subset_masks)


def accumulate(plan: SearchPlan, targets: Sequence[Target], rule: Rule,
               states: Sequence[State], changes: Sequence[SearchChange]) -> None:
    """One fused pass per target and step; unsupported rules or dtypes use the reference."""
    fused = all(v.dtype == torch.float32 and v.device.type == "cpu" and v.is_contiguous()
                for s in states for v in s.values())
    if not fused or not isinstance(rule, (PaperRule, MeanRule)):
        return reference.accumulate(plan, targets, rule, states, changes)
    if isinstance(rule, PaperRule):
        terms = [rule.term(c) for c in changes]
        for t, s in zip(targets, states):
            _cpu.accumulate_halving(s["score"].numpy(), plan.seed, plan.step, t.offset,
                                    plan.threshold, terms)
    else:
        damages = [c.damage for c in changes]
        for t, s in zip(targets, states):
            _cpu.accumulate_sum_count(s["damage_sum"].numpy(), s["count"].numpy(), plan.seed,
                                      plan.step, t.offset, plan.threshold, damages)
