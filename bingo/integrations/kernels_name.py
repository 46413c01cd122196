"""The top-level name ``kernels``: the Hugging Face ``kernels`` distribution (which
``transformers`` 5 imports) against bingo's own ``kernels/`` source folder.

bingo installs that folder as ``bingo.kernels`` and never as a top-level module, but
Python run from a clone's root (``python -m pytest``, ``python -m bingo``) puts the root
first on ``sys.path``, where ``kernels/`` shadows the installed distribution and
``transformers`` fails with ``cannot import name ... from 'kernels'``."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path


def prefer_installed_kernels() -> bool:
    """Import the installed ``kernels`` distribution under its own name when bingo's
    source folder would shadow it; True if it did. Nothing happens without the
    distribution, once the name is imported, or when nothing shadows it."""
    if "kernels" in sys.modules:
        return False
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    found, ours = importlib.util.find_spec("kernels"), importlib.util.find_spec("bingo.kernels")
    if found is None or ours is None or found.origin is None or ours.origin is None:
        return False
    if Path(found.origin).resolve() != Path(ours.origin).resolve():
        return False  # the name already resolves elsewhere: the distribution
    root = Path(ours.origin).resolve().parent.parent  # the clone whose kernels/ shadows
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    try:
        importlib.invalidate_caches()
        importlib.import_module("kernels")
    finally:
        sys.path[:] = saved
    return True
