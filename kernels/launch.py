"""What every launcher needs: the stream's key words, and variant lists as arithmetic runs."""
from __future__ import annotations

import os
from typing import Iterator, List, Sequence, Tuple

M32 = 0xFFFFFFFF

# Arguments whose values change from call to call: never specialized (a value of 1
# would otherwise become a compile-time constant, and each new value no recompile).
VARYING = ["start", "v0", "dv", "seed_lo", "seed_hi", "step_lo", "step_hi", "threshold"]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def elementwise_block() -> int:
    """Elements per program of the elementwise kernels. The CPU interpreter pays per
    program and per operation, not per element, so it gets few, large programs."""
    return 16384 if interpreting() else 1024


def stream_args(seed: int, step: int) -> Tuple[int, int, int, int]:
    """(seed_lo, seed_hi, step_lo, step_hi): the Philox key and the counter's step words."""
    return seed & M32, (seed >> 32) & M32, step & M32, (step >> 32) & M32


def variant_runs(variants: Sequence[int]) -> Iterator[Tuple[int, int, int, int]]:
    """Split ``variants`` into arithmetic runs (j0, count, v0, dv): one launch each, the
    variant of grid row j being v0 + j * dv, so no list of variants is copied to the GPU.
    Chunks of consecutive variants (what a search uses) are one run."""
    v: List[int] = list(variants)
    j = 0
    while j < len(v):
        dv = v[j + 1] - v[j] if j + 1 < len(v) and v[j + 1] > v[j] else 1
        n = 1
        while j + n < len(v) and v[j + n] - v[j + n - 1] == dv:
            n += 1
        yield j, n, v[j], dv
        j += n
