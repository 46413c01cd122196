"""All K variants of a Linear layer in one launch: out[j] = x[j] @ where(M_j, W0, W)^T + b_j.

Grid: (batch blocks, output blocks, variants). Each program walks the input dimension
in BLOCK_K steps; the weight tile of variant j is formed in registers as
where(mask, W0, W) from the regenerated subset, so neither the K masks nor the K
masked weights ever exist in memory. A shared input (the same x for every variant,
as at the first target layer) is read with a variant stride of 0. float32 products
use IEEE precision (no TF32), so results match the reference within float32 rounding;
bf16 inputs accumulate in float32.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .launch import VARYING, interpreting, stream_args, variant_runs
from .philox import element_draw


@triton.jit(do_not_specialize=VARYING)
def masked_linear_kernel(x_ptr, w_ptr, w0_ptr, b_ptr, b0_ptr, out_ptr, B, I, O,
                         stride_xv, stride_xb, stride_xi, start, v0, dv, seed_lo, seed_hi,
                         step_lo, step_hi, threshold, NEURON: tl.constexpr,
                         HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    variant = v0 + j * dv
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    row_reset = element_draw(start + rn, variant, seed_lo, seed_hi, step_lo, step_hi) < threshold
    x_base = x_ptr + j.to(tl.int64) * stride_xv + rm[:, None].to(tl.int64) * stride_xb
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        kk = k0 + rk
        x = tl.load(x_base + kk[None, :] * stride_xi, mask=(rm < B)[:, None] & (kk < I)[None, :],
                    other=0.0)
        widx = rn[:, None] * I + kk[None, :]
        wmask = (rn < O)[:, None] & (kk < I)[None, :]
        w = tl.load(w_ptr + widx, mask=wmask, other=0.0)
        w0 = tl.load(w0_ptr + widx, mask=wmask, other=0.0)
        if NEURON:
            reset = row_reset[:, None]
        else:
            reset = element_draw(start + widx, variant, seed_lo, seed_hi, step_lo,
                                 step_hi) < threshold
        wv = tl.where(reset, w0, w)
        if IEEE:
            acc += tl.dot(x, tl.trans(wv), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(wv))
    if HAS_BIAS:
        b = tl.load(b_ptr + rn, mask=rn < O, other=0.0)
        if NEURON:
            b = tl.where(row_reset, tl.load(b0_ptr + rn, mask=rn < O, other=0.0), b)
        acc += b[None, :].to(tl.float32)
    out = out_ptr + j.to(tl.int64) * B * O + rm[:, None].to(tl.int64) * O + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=(rm < B)[:, None] & (rn < O)[None, :])


def _blocks(batch: int):
    if interpreting():  # few, large programs: the interpreter pays per program, not per FLOP
        return 64, 64, 256
    return (64 if batch > 32 else 16), 64, 32


def linear_variants(seed: int, step: int, variants: Sequence[int], start: int, threshold: int,
                    neuron: bool, x: torch.Tensor, weight: torch.Tensor, initial: torch.Tensor,
                    bias: Optional[torch.Tensor],
                    initial_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """[V, B, out] for x [B, in] (shared) or [V, B, in]; neuron=True resets whole rows
    and their bias entries (global unit index start + row)."""
    w, w0 = weight.detach().contiguous(), initial.detach().to(weight.dtype).contiguous()
    O, I = w.shape
    V = len(variants)
    shared = x.dim() == 2
    B = x.shape[-2]
    out = torch.empty(V, B, O, dtype=x.dtype, device=x.device)
    has_bias = bias is not None
    b = bias.detach().contiguous() if has_bias else w  # any pointer when unused
    b0 = initial_bias.detach().contiguous() if (has_bias and neuron) else b
    bm, bn, bk = _blocks(B)
    for j0, count, v0, dv in variant_runs(variants):
        xs = x if shared else x[j0:j0 + count]
        sv = 0 if shared else xs.stride(0)
        grid = (triton.cdiv(B, bm), triton.cdiv(O, bn), count)
        masked_linear_kernel[grid](xs, w, w0, b, b0, out[j0:], B, I, O, sv, xs.stride(-2),
                                   xs.stride(-1), start, v0, dv, *stream_args(seed, step),
                                   threshold, NEURON=neuron, HAS_BIAS=has_bias,
                                   IEEE=x.dtype == torch.float32, BLOCK_M=bm, BLOCK_N=bn,
                                   BLOCK_K=bk)
    return out
