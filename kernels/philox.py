"""The subset stream inside Triton kernels: each element's one-byte draw, as in bingo.engine.subsets.

Philox-4x32-10 keyed (seed_lo, seed_hi) with counter (group, variant, step_lo, step_hi);
element e takes byte e % 4 (little end first) of word (e // 4) % 4 of group e // 16.

* ``group_draws``: [G, 16] draws of whole groups, one Philox call per group; for the
  elementwise kernels, whose blocks are laid out along the groups;
* ``element_draw``: draws of arbitrary element indices, one call per element; for
  weight tiles of a matrix product, which are not aligned to the groups (a GPU has
  compute to spare there).

The scalars may be Python ints or integer tensors of any width: each is reduced to its
low 32 bits.
"""
import triton
import triton.language as tl

ROUND_A = tl.constexpr(0xD2511F53)
ROUND_B = tl.constexpr(0xCD9E8D57)
KEY_A = tl.constexpr(0x9E3779B9)
KEY_B = tl.constexpr(0xBB67AE85)
ROUNDS = tl.constexpr(10)


@triton.jit
def philox_words(group, variant, seed_lo, seed_hi, step_lo, step_hi):
    """The four uint32 words of the Philox calls for int64 group indices ``group``."""
    wide = tl.zeros_like(group).to(tl.int64)  # adding a scalar of any int type widens to int64,
    c0 = group.to(tl.uint32)                  # then .to(uint32) keeps its low 32 bits
    c1 = (wide + variant).to(tl.uint32)
    c2 = (wide + step_lo).to(tl.uint32)
    c3 = (wide + step_hi).to(tl.uint32)
    k0 = (wide + seed_lo).to(tl.uint32)
    k1 = (wide + seed_hi).to(tl.uint32)
    for _ in tl.static_range(ROUNDS):
        n0 = tl.umulhi(c2, ROUND_B) ^ c1 ^ k0
        n2 = tl.umulhi(c0, ROUND_A) ^ c3 ^ k1
        c1 = c2 * ROUND_B
        c3 = c0 * ROUND_A
        c0 = n0
        c2 = n2
        k0 = k0 + KEY_A
        k1 = k1 + KEY_B
    return c0, c1, c2, c3


@triton.jit
def _pick_byte(c0, c1, c2, c3, e):
    word = (e // 4) % 4
    w = tl.where(word == 0, c0, tl.where(word == 1, c1, tl.where(word == 2, c2, c3)))
    return (w >> ((e % 4) * 8).to(tl.uint32)) & 0xFF


@triton.jit
def element_draw(e, variant, seed_lo, seed_hi, step_lo, step_hi):
    """uint32 draws in [0, 256) of the int64 element indices ``e`` for one variant."""
    c0, c1, c2, c3 = philox_words(e // 16, variant, seed_lo, seed_hi, step_lo, step_hi)
    return _pick_byte(c0, c1, c2, c3, e)


@triton.jit
def group_draws(group, variant, seed_lo, seed_hi, step_lo, step_hi):
    """uint32 draws [G, 16] of the 16 elements of each int64 group index in ``group`` [G]."""
    c0, c1, c2, c3 = philox_words(group, variant, seed_lo, seed_hi, step_lo, step_hi)
    lane = tl.arange(0, 16)[None, :]
    return _pick_byte(c0[:, None], c1[:, None], c2[:, None], c3[:, None], lane)
