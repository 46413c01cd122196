"""Compile every kernel for a CUDA target without a GPU (Triton's ahead-of-time path).

The CPU interpreter runs the kernels' arithmetic but not the compiler's rules (global
constants must be ``tl.constexpr``, types must unify, dot shapes must be legal), so the
tests also compile each kernel to PTX and a cubin for sm_90 (H100) here, in a process
without TRITON_INTERPRET:

    python -m bingo.kernels.aot [capability]
"""
from __future__ import annotations

import os
import sys
from typing import Dict

_STREAM = dict(start="i64", v0="i64", dv="i64", seed_lo="i64", seed_hi="i64", step_lo="i64",
               step_hi="i64", threshold="i32")
_NO_VARIANT = {k: v for k, v in _STREAM.items() if k not in ("v0", "dv")}


def _variants():
    """(name, kernel, signature, constexprs) for every specialization the backend launches."""
    from . import accumulate, linear, masks, proxies
    for dt in ("fp32", "bf16", "fp16"):
        sig = dict(x_ptr=f"*{dt}", w_ptr=f"*{dt}", w0_ptr=f"*{dt}", b_ptr=f"*{dt}",
                   b0_ptr=f"*{dt}", out_ptr=f"*{dt}", B="i32", I="i32", O="i32",
                   stride_xv="i32", stride_xb="i32", stride_xi="i32", **_STREAM,
                   NEURON="constexpr", HAS_BIAS="constexpr", IEEE="constexpr",
                   BLOCK_M="constexpr", BLOCK_N="constexpr", BLOCK_K="constexpr")
        for neuron in (False, True):
            for bias in (False, True):
                for bm in (16, 64):
                    yield (f"masked_linear[{dt},neuron={neuron},bias={bias},M={bm}]",
                           linear.masked_linear_kernel, sig,
                           dict(NEURON=neuron, HAS_BIAS=bias, IEEE=dt == "fp32", BLOCK_M=bm,
                                BLOCK_N=64, BLOCK_K=32))
        yield (f"masked_weights[{dt}]", masks.masked_weights_kernel,
               dict(w_ptr=f"*{dt}", w0_ptr=f"*{dt}", out_ptr=f"*{dt}", n="i32", unit="i32",
                    **_STREAM, BLOCK="constexpr"), dict(BLOCK=1024))
    yield ("subset_masks", masks.subset_masks_kernel,
           dict(out_ptr="*i1", numel="i32", **_STREAM, BLOCK="constexpr"), dict(BLOCK=1024))
    yield ("accumulate_halving", accumulate.accumulate_halving_kernel,
           dict(score_ptr="*fp32", terms_ptr="*fp32", n="i32", K="i32", **_NO_VARIANT,
                BLOCK_G="constexpr"), dict(BLOCK_G=64))
    yield ("accumulate_sum_count", accumulate.accumulate_sum_count_kernel,
           dict(sum_ptr="*fp32", count_ptr="*fp32", damages_ptr="*fp32", n="i32", K="i32",
                **_NO_VARIANT, BLOCK_G="constexpr"), dict(BLOCK_G=64))
    for moving in (True, False):
        yield (f"proxy_update[movement={moving}]", proxies.proxy_update_kernel,
               dict(table="*i64", decay="fp32", T="constexpr", MOVEMENT="constexpr",
                    ALIGNED="constexpr", BLOCK="constexpr"),
               dict(T=3, MOVEMENT=moving, ALIGNED=moving, BLOCK=1024))
    yield ("movement_update", proxies.movement_update_kernel,
           dict(table="*i64", T="constexpr", ALIGNED="constexpr", BLOCK="constexpr"),
           dict(T=1, ALIGNED=True, BLOCK=1024))


def compile_all(capability: int = 90) -> Dict[str, int]:
    """Compile every kernel for sm_<capability>; returns each one's cubin size in bytes."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    target = GPUTarget("cuda", capability, 32)
    sizes = {}
    for name, kernel, signature, constexprs in _variants():
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature,
                                            constexprs=constexprs), target=target)
        sizes[name] = len(compiled.asm["cubin"])
    return sizes


if __name__ == "__main__":
    for name, size in compile_all(int(sys.argv[1]) if len(sys.argv) > 1 else 90).items():
        print(f"{name}: cubin {size} bytes")
