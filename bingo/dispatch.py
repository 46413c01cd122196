"""The one place that chooses a backend for the search operations.

Backends expose the same operation names as :mod:`bingo.reference`
(``subset_masks``, ``evaluate_variants``, ``accumulate``): CPU tensors go to the
C++ backend (:mod:`bingo.cpp`) when it was built, else to the PyTorch reference;
the Triton backend for CUDA tensors is still to come.
``BINGO_BACKEND=torch|cpp|triton`` forces a choice: an explicit request that
cannot be met raises, an automatic choice falls back with one warning.
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType

import torch

from . import cpp, reference

BACKENDS = ("torch", "cpp", "triton")


def available_backends() -> dict[str, bool]:
    """Which backends this installation can run."""
    return {"torch": True, "cpp": cpp.available(), "triton": False}


def select_backend(device: torch.device | str = "cpu") -> ModuleType:
    """The backend module for tensors on ``device``, honouring ``BINGO_BACKEND``."""
    forced = os.environ.get("BINGO_BACKEND", "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"BINGO_BACKEND={forced!r} is not a backend; use one of {BACKENDS}")
    device = torch.device(device)
    if forced and not available_backends()[forced]:
        raise RuntimeError(
            f"BINGO_BACKEND={forced} was requested but that backend is not available in this "
            f"installation (the C++ one needs a compiler at install time); unset BINGO_BACKEND "
            f"or set it to 'torch'"
        )
    if forced == "torch":
        return reference
    if forced == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"BINGO_BACKEND=cpp runs on CPU tensors, the model is on {device}")
        return cpp
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
    return {reference: "torch", cpp: "cpp"}.get(backend, backend.__name__)
