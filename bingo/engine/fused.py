"""What the compiled backends (C++, Triton) share: for accumulation, which rules and
states their fused kernels cover, and the loop that hands each target to them.

A fused kernel regenerates each element's K decisions and applies the rule's update
for variants 0..K-1 in order, reading and writing the state once per step. Two update
families exist: the "paper" family (running halving by a per-search term) and the
"mean" family (damage sum and count). Anything else stays with the reference.
For the elementwise proxy ops, ``foreach``: which targets a fused kernel may take.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import torch

from . import reference
from .reference import SearchPlan
from .rules import MeanRule, PaperRule, Rule, SearchChange, State
from .targets import Target

# halving(score, seed, step, start, threshold, terms); sum_count(sum, count, seed, step,
# start, threshold, damages): in place, on contiguous float32 tensors. ``terms`` and
# ``damages`` are what ``values`` made of the per-variant floats, once per step.
Halving = Callable[..., None]
SumCount = Callable[..., None]


def accumulate(plan: SearchPlan, targets: Sequence[Target], rule: Rule,
               states: Sequence[State], changes: Sequence[SearchChange], *,
               halving: Halving, sum_count: SumCount, device_type: str,
               values: Callable[[List[float]], Any] = list) -> None:
    """Apply the step with a backend's fused kernels, or with the reference when the rule
    or a state tensor (dtype, device, layout) is not one they cover."""
    ok = all(v.dtype == torch.float32 and v.device.type == device_type and v.is_contiguous()
             for s in states for v in s.values())
    if not ok or not isinstance(rule, (PaperRule, MeanRule)):
        reference.accumulate(plan, targets, rule, states, changes)
        return
    if isinstance(rule, PaperRule):
        terms = values([rule.term(c) for c in changes])
        for t, s in zip(targets, states):
            halving(s["score"], plan.seed, plan.step, t.offset, plan.threshold, terms)
    else:
        damages = values([c.damage for c in changes])
        for t, s in zip(targets, states):
            sum_count(s["damage_sum"], s["count"], plan.seed, plan.step, t.offset,
                      plan.threshold, damages)


def foreach(lists: Sequence[Optional[Sequence[torch.Tensor]]], *scalars: Any,
            kernel: Callable[..., None], reference_op: Callable[..., None],
            device_type: str, addresses: bool = False) -> None:
    """An elementwise foreach op (``proxy_update``, ``movement_update``): ``lists`` holds one
    list per operand, one entry per target (None: an operand the op leaves out, passed on
    as None). Targets whose tensors are all contiguous float32 of one size on
    ``device_type`` go to the backend's fused ``kernel``, the others to ``reference_op``
    (same arguments: one list per operand). With ``addresses`` the kernel takes (sizes,
    every fast target's data addresses in operand order, scalars) instead of tensors,
    gathered in the same pass as the checks.

    This runs on every training step, right after the step has pushed Python's code and
    data out of the CPU caches, where each tensor attribute read costs ~1 us: so one
    pass, a few reads per tensor."""
    f32, cpu, cuda = torch.float32, device_type == "cpu", device_type == "cuda"
    present = [i for i, operand in enumerate(lists) if operand is not None]
    sizes: List[int] = []
    fast: List[Any] = []
    slow: List[Sequence[torch.Tensor]] = []
    for tensors in zip(*(lists[i] for i in present), strict=True):
        n = tensors[0].numel()
        for x in tensors:
            if (x.dtype is not f32 or not x.is_contiguous() or x.numel() != n
                    or not (x.is_cpu if cpu else x.is_cuda if cuda  # ~0.1 us, not ~1
                            else x.device.type == device_type)):
                slow.append(tensors)
                break
        else:
            sizes.append(n)
            if addresses:
                fast.extend([x.data_ptr() for x in tensors])
            else:
                fast.append(tensors)

    def operands(rows: List[Sequence[torch.Tensor]]) -> List[Optional[List[torch.Tensor]]]:
        out: List[Optional[List[torch.Tensor]]] = [None] * len(lists)
        for i, column in zip(present, zip(*rows)):
            out[i] = list(column)
        return out
    if slow:
        reference_op(*operands(slow), *scalars)
    if sizes:
        if addresses:
            kernel(sizes, fast, *scalars)
        else:
            kernel(*operands(fast), *scalars)
