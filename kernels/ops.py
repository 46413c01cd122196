"""The Triton backend: the operations of :mod:`bingo.engine.reference` under the same names.

* ``subset_masks``, ``masked_weights``, ``variant_bias``: one launch each, bit-identical;
* ``linear_variants``: every variant of a Linear layer in one launch (kernels/linear.py),
  within float32 rounding of the reference;
* ``evaluate_variants``: the batched pass of :mod:`bingo.engine.batched` on these operations;
* ``accumulate``: the fused update for the "paper" and "mean" rule families,
  bit-identical; other rules and non-float32 states use the reference;
* ``proxy_update`` and ``movement_update``: the per-weight proxies of one training step
  (all three, or movement alone), one launch for every target (its addresses in a
  device table), replayed as a CUDA graph from the second step on (kernels/proxies.py).
* ``proxy_update_at`` and ``movement_update_at``: the same on data addresses checked by
  the caller (``bingo.engine.proxies`` keeps them between steps), as in ``bingo.engine.cpp``.

Tensors live on a CUDA device, or on the CPU under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import sys
from typing import List, Mapping, Optional, Sequence

import torch

from bingo.engine import batched, fused, reference
from bingo.engine.reference import SearchBatch, SearchPlan
from bingo.engine.rules import Rule, SearchChange, State
from bingo.engine.targets import Target

from . import accumulate as _accumulate
from . import linear as _linear
from . import masks as _masks
from . import proxies as _proxies

_this = sys.modules[__name__]


def subset_masks(plan: SearchPlan, variants: Sequence[int], targets: Sequence[Target],
                 device: torch.device) -> List[torch.Tensor]:
    """Per target, bool [len(variants), target.size]: the elements each variant resets."""
    flat = _masks.subset_masks(plan.seed, plan.step, variants, 0, plan.total, plan.threshold,
                               device)
    return [flat[:, t.offset:t.offset + t.size] for t in targets]


def masked_weights(plan: SearchPlan, variants: Sequence[int], target: Target,
                   weight: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """[len(variants), *shape]: variant k's tensor, where(mask_k, initial, weight)."""
    unit = 1 if plan.granularity == "weight" else weight[0].numel()
    return _masks.masked_weights(plan.seed, plan.step, variants, target.offset, plan.threshold,
                                 weight, initial, unit)


def variant_bias(plan: SearchPlan, variants: Sequence[int], target: Target,
                 bias: Optional[torch.Tensor],
                 initial_bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Each variant's bias [len(variants), units]; None at weight granularity (bias unchanged)."""
    if bias is None or plan.granularity == "weight":
        return None
    return _masks.masked_weights(plan.seed, plan.step, variants, target.offset, plan.threshold,
                                 bias, initial_bias, 1)


def linear_variants(plan: SearchPlan, variants: Sequence[int], target: Target,
                    x: torch.Tensor, weight: torch.Tensor, initial: torch.Tensor,
                    bias: Optional[torch.Tensor], initial_bias: Optional[torch.Tensor],
                    base: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[V, B, out]: a Linear layer's output under each variant, in one launch (``base`` unused)."""
    return _linear.linear_variants(plan.seed, plan.step, variants, target.offset, plan.threshold,
                                   plan.granularity == "neuron", x, weight, initial, bias,
                                   initial_bias)


def evaluate_variants(plan: SearchPlan, targets: Sequence[Target],
                      current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                      batch: SearchBatch) -> tuple[float, List[float]]:
    """All variants in one batched pass (:mod:`bingo.engine.batched`) on the Triton operations."""
    return batched.evaluate_variants(plan, targets, current, initial, batch, ops=_this)


def accumulate(plan: SearchPlan, targets: Sequence[Target], rule: Rule,
               states: Sequence[State], changes: Sequence[SearchChange]) -> None:
    """One fused launch per target and step; unsupported rules or dtypes use the reference.
    The per-variant terms go to the device once per step, not once per target."""
    device = next(iter(states[0].values())).device
    fused.accumulate(plan, targets, rule, states, changes,
                     halving=_accumulate.accumulate_halving,
                     sum_count=_accumulate.accumulate_sum_count, device_type=device.type,
                     values=lambda v: torch.tensor(v, dtype=torch.float32, device=device))


def proxy_update(fisher: Sequence[torch.Tensor], reset: Sequence[torch.Tensor],
                 movement: Optional[Sequence[torch.Tensor]], grad: Sequence[torch.Tensor],
                 weight: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                 decay: float) -> None:
    """One launch for every target's proxies (contiguous float32; else the reference);
    ``movement`` None leaves that sum out."""
    if fisher:
        device, moving = fisher[0].device, movement is not None
        fused.foreach((fisher, reset, movement, grad, weight, target), decay,
                      kernel=lambda sizes, addresses, d: proxy_update_at(
                          sizes, addresses, d, moving, device),
                      reference_op=reference.proxy_update, device_type=device.type,
                      addresses=True)


def movement_update(movement: Sequence[torch.Tensor], grad: Sequence[torch.Tensor],
                    weight: Sequence[torch.Tensor]) -> None:
    """One launch for every target's movement proxy alone (as ``proxy_update``)."""
    if movement:
        device = movement[0].device
        fused.foreach((movement, grad, weight),
                      kernel=lambda sizes, addresses: movement_update_at(sizes, addresses,
                                                                         device),
                      reference_op=reference.movement_update, device_type=device.type,
                      addresses=True)


def proxy_update_at(sizes: List[int], addresses: List[int], decay: float, movement: bool,
                    device: torch.device) -> None:
    """``proxy_update`` on data addresses already checked (contiguous float32 tensors on
    ``device``, per target fisher, reset, [movement,] grad, weight, target): what
    ``proxy_update`` runs after its checks, and what ``bingo.engine.proxies`` calls on
    addresses it keeps validated between steps."""
    _proxies.proxy_update(sizes, addresses, decay, movement, device)


def movement_update_at(sizes: List[int], addresses: List[int], device: torch.device) -> None:
    """``movement_update`` on checked addresses (movement, grad, weight per target)."""
    _proxies.movement_update(sizes, addresses, device)
