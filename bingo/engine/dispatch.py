"""The one place that chooses a backend for the search operations.

Backends expose the same operation names as :mod:`bingo.engine.reference` (``subset_masks``,
``masked_weights``, ``linear_variants``, ``evaluate_variants``, ``accumulate``, ...):

* CUDA tensors go to the Triton backend (:mod:`bingo.kernels.ops`) when ``triton`` is
  installed, else to the reference with one warning;
* CPU tensors go to the C++ backend (:mod:`bingo.engine.cpp`) when it was built, else to the
  reference with one warning.

``BINGO_BACKEND=torch|cpp|triton`` forces a choice: an explicit request that cannot be
met raises. ``BINGO_BACKEND=triton`` on CPU tensors is accepted only under
``TRITON_INTERPRET=1`` (Triton's CPU interpreter: slow, for testing the kernels).
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Optional

import torch

from . import cpp, reference

BACKENDS = ("torch", "cpp", "triton")


def triton_ops() -> Optional[ModuleType]:
    """The Triton backend module, or None if triton cannot be imported."""
    try:
        from ..kernels import ops
    except ImportError:
        return None
    return ops


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends() -> dict[str, bool]:
    """Which backends this installation can run (Triton: needs triton and a CUDA device)."""
    has_gpu = torch.cuda.is_available()
    return {"torch": True, "cpp": cpp.available(),
            "triton": has_gpu and triton_ops() is not None}


def select_backend(device: torch.device | str = "cpu") -> ModuleType:
    """The backend module for tensors on ``device``, honouring ``BINGO_BACKEND``.
    Remembered per (device, BINGO_BACKEND, TRITON_INTERPRET): a search asks every step."""
    forced = os.environ.get("BINGO_BACKEND", "").strip().lower()
    key = (device, forced, _interpreting())
    chosen = _chosen.get(key)
    if chosen is None:
        chosen = _chosen[key] = _select(torch.device(device), forced)
    return chosen


_chosen: dict = {}


def _select(device: torch.device, forced: str) -> ModuleType:
    if forced and forced not in BACKENDS:
        raise ValueError(f"BINGO_BACKEND={forced!r} is not a backend; use one of {BACKENDS}")
    if forced == "torch":
        return reference
    if forced == "cpp":
        if not cpp.available():
            raise RuntimeError("BINGO_BACKEND=cpp was requested but that backend is not available "
                               "in this installation (the C++ one needs a compiler at install "
                               "time); unset BINGO_BACKEND or set it to 'torch'")
        if device.type != "cpu":
            raise RuntimeError(f"BINGO_BACKEND=cpp runs on CPU tensors, the model is on {device}")
        return cpp
    if forced == "triton":
        ops = triton_ops()
        if ops is None:
            raise RuntimeError("BINGO_BACKEND=triton was requested but triton cannot be "
                               "imported; pip install triton, or unset BINGO_BACKEND")
        if device.type != "cuda" and not _interpreting():
            raise RuntimeError(f"BINGO_BACKEND=triton runs on CUDA tensors, the model is on "
                               f"{device} (set TRITON_INTERPRET=1 to run the kernels on the "
                               f"CPU, slowly, for testing)")
        return ops
    if device.type == "cuda":
        ops = triton_ops()
        if ops is not None:
            return ops
        _warn_once("triton is not installed: searches on the GPU run on the slower PyTorch "
                   "reference (pip install triton)")
        return reference
    if device.type == "cpu":
        if cpp.available():
            return cpp
        _warn_once("bingo's C++ backend is not built (no compiler at install time?); "
                   "searches run on the slower PyTorch reference")
    return reference


_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def backend_name(backend: ModuleType) -> str:
    if backend is reference:
        return "torch"
    if backend is cpp:
        return "cpp"
    return "triton" if backend is triton_ops() else backend.__name__
