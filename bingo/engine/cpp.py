"""The C++ CPU backend (``bingo._cpu``, built from csrc/): the operations of
:mod:`bingo.engine.reference` under the same names.

* ``subset_masks`` and ``masked_weights``: bit-identical to the reference;
* ``linear_variants``: for a shared input, X·Wᵀ once (the caller's ``base``) plus
  each variant's sparse correction X·(M_k ⊙ (W0 − W))ᵀ, so K variants cost about
  (1 + K·p) dense products; for per-variant inputs, C++ masked weights and one
  batched matrix product. Equal to the reference within float32 rounding;
* ``evaluate_variants``: the batched pass of :mod:`bingo.engine.batched` on these ops;
* ``accumulate``: one fused pass per target for the "paper" and "mean" rule
  families (each element's K decisions regenerated in registers), bit-identical;
  other rules and float64 states use the reference;
* ``proxy_update`` and ``movement_update``: the per-weight proxies of one training
  step (all three, or movement alone), every target in one OpenMP pass (within
  float32 rounding of the reference).
* ``proxy_update_at`` and ``movement_update_at``: the same on data addresses checked
  by the caller (``bingo.engine.proxies`` keeps them between steps); no reference twin.
"""
from __future__ import annotations

import sys
from typing import List, Mapping, Optional, Sequence

import torch

from . import batched, fused, reference
from .reference import SearchBatch, SearchPlan, variant_bias
from .rules import Rule, SearchChange, State
from .targets import Target

try:
    from .. import _cpu
except ImportError:  # not built (no compiler at install time)
    _cpu = None

_this = sys.modules[__name__]


def available() -> bool:
    return _cpu is not None


def subset_masks(plan: SearchPlan, variants: Sequence[int], targets: Sequence[Target],
                 device: torch.device) -> List[torch.Tensor]:
    """Per target, bool [len(variants), target.size]: the elements each variant resets."""
    flat = torch.from_numpy(_cpu.subset_masks(plan.seed, plan.step, list(variants), 0,
                                              plan.total, plan.threshold))
    return [flat[:, t.offset:t.offset + t.size] for t in targets]


def _f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu"


def masked_weights(plan: SearchPlan, variants: Sequence[int], target: Target,
                   weight: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """[len(variants), *shape]: variant k's tensor, where(mask_k, initial, weight)."""
    if not (_f32(weight) and _f32(initial)):
        return reference.masked_weights(plan, variants, target, weight, initial)
    out = torch.empty((len(variants),) + tuple(weight.shape), dtype=weight.dtype)
    unit = 1 if plan.granularity == "weight" else weight[0].numel()
    _cpu.masked_weights(weight.detach().contiguous().numpy(), initial.contiguous().numpy(),
                        out.numpy(), plan.seed, plan.step, list(variants), target.offset,
                        plan.threshold, unit)
    return out


def linear_variants(plan: SearchPlan, variants: Sequence[int], target: Target,
                    x: torch.Tensor, weight: torch.Tensor, initial: torch.Tensor,
                    bias: Optional[torch.Tensor], initial_bias: Optional[torch.Tensor],
                    base: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[V, B, out]: a Linear layer's output under each variant (see the module docstring)."""
    if x.dim() == 2 and base is not None and all(map(_f32, (x, weight, initial, base))):
        v = len(variants)
        out_t = torch.empty(v, weight.shape[0], x.shape[0])
        delta = torch.empty(0)
        if plan.granularity == "neuron" and bias is not None and initial_bias is not None:
            delta = (initial_bias - bias).float().contiguous()
        _cpu.linear_shared_t(x.t().contiguous().numpy(), weight.detach().contiguous().numpy(),
                             initial.contiguous().numpy(), base.t().contiguous().numpy(),
                             delta.numpy(), out_t.numpy(), plan.seed, plan.step, list(variants),
                             target.offset, plan.threshold, plan.granularity == "neuron")
        return out_t.transpose(1, 2)
    w = masked_weights(plan, variants, target, weight, initial)
    b = variant_bias(plan, variants, target, bias, initial_bias)
    if b is None and bias is not None:
        b = bias.expand(len(variants), -1)
    if b is None:
        return torch.matmul(x, w.transpose(1, 2))
    x3 = x.expand((len(variants),) + tuple(x.shape)) if x.dim() == 2 else x
    return torch.baddbmm(b.unsqueeze(1), x3, w.transpose(1, 2))


def evaluate_variants(plan: SearchPlan, targets: Sequence[Target],
                      current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                      batch: SearchBatch) -> tuple[float, List[float]]:
    """All variants in one batched pass (:mod:`bingo.engine.batched`) on the C++ operations."""
    return batched.evaluate_variants(plan, targets, current, initial, batch, ops=_this)


def accumulate(plan: SearchPlan, targets: Sequence[Target], rule: Rule,
               states: Sequence[State], changes: Sequence[SearchChange]) -> None:
    """One fused pass per target and step; unsupported rules or dtypes use the reference."""
    fused.accumulate(plan, targets, rule, states, changes, halving=_halving,
                     sum_count=_sum_count, device_type="cpu")


def _halving(score, seed, step, start, threshold, terms):
    _cpu.accumulate_halving(score.numpy(), seed, step, start, threshold, terms)


def _sum_count(damage_sum, count, seed, step, start, threshold, damages):
    _cpu.accumulate_sum_count(damage_sum.numpy(), count.numpy(), seed, step, start, threshold,
                              damages)


def proxy_update(fisher: Sequence[torch.Tensor], reset: Sequence[torch.Tensor],
                 movement: Optional[Sequence[torch.Tensor]], grad: Sequence[torch.Tensor],
                 weight: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                 decay: float) -> None:
    """Every target's proxies in one OpenMP pass (float32 CPU tensors; else the reference);
    ``movement`` None leaves that sum out. The extension takes data addresses (~15 us
    saved a target against arrays), checked by ``fused.foreach``."""
    moving = movement is not None  # the extension takes 6 addresses a target, or 5
    fused.foreach((fisher, reset, movement, grad, weight, target), decay,
                  kernel=lambda sizes, addresses, d: proxy_update_at(sizes, addresses, d,
                                                                     moving),
                  reference_op=reference.proxy_update, device_type="cpu", addresses=True)


def movement_update(movement: Sequence[torch.Tensor], grad: Sequence[torch.Tensor],
                    weight: Sequence[torch.Tensor]) -> None:
    """Every target's movement proxy in one OpenMP pass (as ``proxy_update``)."""
    fused.foreach((movement, grad, weight), kernel=movement_update_at,
                  reference_op=reference.movement_update, device_type="cpu", addresses=True)


def proxy_update_at(sizes: List[int], addresses: List[int], decay: float, movement: bool,
                    device: Optional[torch.device] = None) -> None:
    """``proxy_update`` on data addresses already checked (contiguous float32 CPU tensors,
    per target fisher, reset, [movement,] grad, weight, target; ``sizes`` their element
    counts): what ``proxy_update`` runs after its checks, and what ``bingo.engine.proxies``
    calls on addresses it keeps validated between steps. ``device``: the CPU."""
    _cpu.proxy_update(sizes, addresses, decay, movement)


def movement_update_at(sizes: List[int], addresses: List[int],
                       device: Optional[torch.device] = None) -> None:
    """``movement_update`` on checked addresses (movement, grad, weight per target)."""
    _cpu.movement_update(sizes, addresses)
