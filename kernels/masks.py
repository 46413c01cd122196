"""Subset masks, and the K masked copies of one tensor, each in one launch.

Grid: (blocks of elements, variants). Element ``offs`` of the tensor is decided by
global index ``start + offs // unit`` (unit = 1 per weight, the row length per neuron).
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .launch import VARYING, elementwise_block, stream_args, variant_runs
from .philox import element_draw


@triton.jit(do_not_specialize=VARYING)
def subset_masks_kernel(out_ptr, numel, start, v0, dv, seed_lo, seed_hi, step_lo, step_hi,
                        threshold, BLOCK: tl.constexpr):
    j = tl.program_id(1)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    draw = element_draw(start + offs, v0 + j * dv, seed_lo, seed_hi, step_lo, step_hi)
    tl.store(out_ptr + j * numel + offs, draw < threshold, mask=offs < numel)


@triton.jit(do_not_specialize=VARYING)
def masked_weights_kernel(w_ptr, w0_ptr, out_ptr, n, unit, start, v0, dv, seed_lo, seed_hi,
                          step_lo, step_hi, threshold, BLOCK: tl.constexpr):
    j = tl.program_id(1)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    draw = element_draw(start + offs // unit, v0 + j * dv, seed_lo, seed_hi, step_lo, step_hi)
    w = tl.load(w_ptr + offs, mask=inside)
    w0 = tl.load(w0_ptr + offs, mask=inside)
    tl.store(out_ptr + j * n + offs, tl.where(draw < threshold, w0, w), mask=inside)


def subset_masks(seed: int, step: int, variants: Sequence[int], start: int, numel: int,
                 threshold: int, device: torch.device) -> torch.Tensor:
    """Bool [len(variants), numel]: element start + i is reset by that variant."""
    block = elementwise_block()
    out = torch.empty(len(variants), numel, dtype=torch.bool, device=device)
    for j0, count, v0, dv in variant_runs(variants):
        grid = (triton.cdiv(numel, block), count)
        subset_masks_kernel[grid](out[j0:], numel, start, v0, dv, *stream_args(seed, step),
                                  threshold, BLOCK=block)
    return out


def masked_weights(seed: int, step: int, variants: Sequence[int], start: int, threshold: int,
                   weight: torch.Tensor, initial: torch.Tensor, unit: int) -> torch.Tensor:
    """[len(variants), *shape]: where(reset, initial, weight), decided per ``unit`` elements."""
    block = elementwise_block()
    w, w0 = weight.detach().contiguous(), initial.detach().to(weight.dtype).contiguous()
    out = torch.empty((len(variants),) + tuple(w.shape), dtype=w.dtype, device=w.device)
    n = w.numel()
    for j0, count, v0, dv in variant_runs(variants):
        grid = (triton.cdiv(n, block), count)
        masked_weights_kernel[grid](w, w0, out[j0:], n, unit, start, v0, dv,
                                    *stream_args(seed, step), threshold, BLOCK=block)
    return out
