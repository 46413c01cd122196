"""Per-weight proxies of one training step (bingo.proxies) in one elementwise launch per
target: fisher <- decay * fisher + g², reset += |g (target - w)|, movement -= g w
(``proxy_update``; without movement for a search that does not collect it), or movement
alone (``movement_update``, the steps in between).
Each state is read and written once, the gradient, weight and target read once."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .launch import elementwise_block


@triton.jit
def proxy_update_kernel(fisher_ptr, reset_ptr, movement_ptr, grad_ptr, weight_ptr, target_ptr,
                        n, decay, MOVEMENT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    g = tl.load(grad_ptr + offs, mask=inside)
    w = tl.load(weight_ptr + offs, mask=inside)
    t = tl.load(target_ptr + offs, mask=inside)
    f = tl.load(fisher_ptr + offs, mask=inside)
    r = tl.load(reset_ptr + offs, mask=inside)
    tl.store(fisher_ptr + offs, f * decay + g * g, mask=inside)
    tl.store(reset_ptr + offs, r + tl.abs(g * (t - w)), mask=inside)
    if MOVEMENT:
        m = tl.load(movement_ptr + offs, mask=inside)
        tl.store(movement_ptr + offs, m - g * w, mask=inside)


def proxy_update(fisher: Sequence[torch.Tensor], reset: Sequence[torch.Tensor],
                 movement: Optional[Sequence[torch.Tensor]], grad: Sequence[torch.Tensor],
                 weight: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                 decay: float) -> None:
    """In place on contiguous float32 states, one launch per target; the tensors of a
    target have the same size. ``movement`` None: that sum is left out (MOVEMENT=False,
    the fisher tensor stands in for its unused pointer)."""
    block = elementwise_block()
    moving = movement is not None
    for i, (f, r, g, w, t) in enumerate(zip(fisher, reset, grad, weight, target, strict=True)):
        n = f.numel()
        m = movement[i] if moving else f
        proxy_update_kernel[(triton.cdiv(n, block),)](f, r, m, g, w, t, n, float(decay),
                                                      MOVEMENT=moving, BLOCK=block)


@triton.jit
def movement_update_kernel(movement_ptr, grad_ptr, weight_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    g = tl.load(grad_ptr + offs, mask=inside)
    w = tl.load(weight_ptr + offs, mask=inside)
    m = tl.load(movement_ptr + offs, mask=inside)
    tl.store(movement_ptr + offs, m - g * w, mask=inside)


def movement_update(movement: Sequence[torch.Tensor], grad: Sequence[torch.Tensor],
                    weight: Sequence[torch.Tensor]) -> None:
    """In place on contiguous float32 tensors of one size per target, one launch each."""
    block = elementwise_block()
    for m, g, w in zip(movement, grad, weight, strict=True):
        n = m.numel()
        movement_update_kernel[(triton.cdiv(n, block),)](m, g, w, n, BLOCK=block)
