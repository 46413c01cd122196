"""Significance accumulation: one pass over a target's rule state per search step.

Each program loads a block of the state once, regenerates each element's decision for
variants 0..K-1 in order (the reference's update order), applies the rule's update in
registers, and stores once: the state is read and written once per step, whatever K.
Blocks follow the stream's 16-element groups, so one Philox call serves 16 elements.
float32 arithmetic as in the reference, so results are bit-identical.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .launch import VARYING, elementwise_block, stream_args
from .philox import group_draws


@triton.jit
def _state_block(start, n, BLOCK_G: tl.constexpr):
    """This program's groups [BLOCK_G], and the state offsets [BLOCK_G, 16] of their elements
    with the mask of those inside the state (blocks follow the stream's 16-element groups)."""
    g = start // 16 + tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    offs = g[:, None] * 16 + tl.arange(0, 16)[None, :] - start
    return g, offs, (offs >= 0) & (offs < n)


@triton.jit(do_not_specialize=VARYING + ["K"])
def accumulate_halving_kernel(score_ptr, terms_ptr, n, K, start, seed_lo, seed_hi, step_lo,
                              step_hi, threshold, BLOCK_G: tl.constexpr):
    """"paper" family: score <- (score + term[k]) * 0.5 for each variant k resetting it."""
    g, offs, inside = _state_block(start, n, BLOCK_G)
    s = tl.load(score_ptr + offs, mask=inside)
    for k in range(K):
        term = tl.load(terms_ptr + k)
        reset = group_draws(g, k, seed_lo, seed_hi, step_lo, step_hi) < threshold
        s = tl.where(reset, (s + term) * 0.5, s)
    tl.store(score_ptr + offs, s, mask=inside)


@triton.jit(do_not_specialize=VARYING + ["K"])
def accumulate_sum_count_kernel(sum_ptr, count_ptr, damages_ptr, n, K, start, seed_lo, seed_hi,
                                step_lo, step_hi, threshold, BLOCK_G: tl.constexpr):
    """"mean" family: damage_sum += damage[k], count += 1 for each variant k resetting it."""
    g, offs, inside = _state_block(start, n, BLOCK_G)
    d = tl.load(sum_ptr + offs, mask=inside)
    c = tl.load(count_ptr + offs, mask=inside)
    for k in range(K):
        damage = tl.load(damages_ptr + k)
        reset = group_draws(g, k, seed_lo, seed_hi, step_lo, step_hi) < threshold
        d = tl.where(reset, d + damage, d)
        c = tl.where(reset, c + 1.0, c)
    tl.store(sum_ptr + offs, d, mask=inside)
    tl.store(count_ptr + offs, c, mask=inside)


def _grid(start: int, n: int, block_g: int):
    groups = (start + n - 1) // 16 - start // 16 + 1
    return (triton.cdiv(groups, block_g),)


def _on_device(values, like: torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    return torch.tensor(values, dtype=torch.float32, device=like.device)


def accumulate_halving(score: torch.Tensor, seed: int, step: int, start: int, threshold: int,
                       terms: Sequence[float] | torch.Tensor) -> None:
    """In place on a contiguous float32 ``score``; ``terms[k]`` is variant k's term (floats,
    or already a float32 tensor on the score's device)."""
    t = _on_device(terms, score)
    n, block_g = score.numel(), elementwise_block() // 16
    accumulate_halving_kernel[_grid(start, n, block_g)](
        score, t, n, len(terms), start, *stream_args(seed, step), threshold, BLOCK_G=block_g)


def accumulate_sum_count(damage_sum: torch.Tensor, count: torch.Tensor, seed: int, step: int,
                         start: int, threshold: int,
                         damages: Sequence[float] | torch.Tensor) -> None:
    """In place on contiguous float32 ``damage_sum`` and ``count`` (damages as for terms)."""
    d = _on_device(damages, damage_sum)
    n, block_g = damage_sum.numel(), elementwise_block() // 16
    accumulate_sum_count_kernel[_grid(start, n, block_g)](
        damage_sum, count, d, n, len(damages), start, *stream_args(seed, step), threshold,
        BLOCK_G=block_g)
