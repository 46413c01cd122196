"""The one place that chooses a backend for the search operations.

Backends expose the same operation names as :mod:`bingo.reference`
(``subset_masks``, ``evaluate_variants``, ``accumulate``). Today the PyTorch
reference is the only one built; the C++ (CPU) and Triton (CUDA) backends plug
in here. ``BINGO_BACKEND=torch|cpp|triton`` forces a choice: an explicit
request that cannot be met raises, an automatic choice falls back quietly.
"""
from __future__ import annotations

import os
from types import ModuleType

import torch

from . import reference

BACKENDS = ("torch", "cpp", "triton")


def available_backends() -> dict[str, bool]:
    """Which backends this installation can run."""
    return {"torch": True, "cpp": False, "triton": False}


def select_backend(device: torch.device | str = "cpu") -> ModuleType:
    """The backend module for tensors on ``device``, honouring ``BINGO_BACKEND``."""
    forced = os.environ.get("BINGO_BACKEND", "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"BINGO_BACKEND={forced!r} is not a backend; use one of {BACKENDS}")
    if forced and not available_backends()[forced]:
        raise RuntimeError(
            f"BINGO_BACKEND={forced} was requested but that backend is not available in this "
            f"installation; unset BINGO_BACKEND or set it to 'torch'"
        )
    return reference


def backend_name(backend: ModuleType) -> str:
    return {reference: "torch"}.get(backend, backend.__name__)
