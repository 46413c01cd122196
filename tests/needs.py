"""Skips that CI turns into failures. A test of a backend this machine lacks (the C++
extension did not build, triton is not installed) is skipped here with the reason; under
``CI=1`` (``.ci/run`` sets it), where both must be there, the same test fails instead, so
no backend goes untested there without a red run."""
from __future__ import annotations

import os
from types import ModuleType

import pytest

from bingo.engine import cpp


def _missing(what: str, fix: str, module_level: bool = False) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} in CI, where it must be ({fix})")
    pytest.skip(f"{what} here ({fix}); CI=1 makes this a failure",
                allow_module_level=module_level)


def cpp_backend() -> None:
    """Skip (fail under CI=1) unless the C++ extension ``bingo._cpu`` was built."""
    if not cpp.available():
        _missing("the C++ backend is not built (bingo._cpu is missing)",
                 "pip install -e . with a C++ compiler")


def triton(module_level: bool = False) -> ModuleType:
    """The triton module; skip (fail under CI=1) when it is not installed
    (``module_level``: called at a test file's top, skipping all of it)."""
    try:
        import triton as module
    except ImportError:
        _missing("triton is not installed", "pip install -e '.[test]' installs it",
                 module_level)
    return module


def extra(package: str) -> ModuleType:
    """An optional extra's package (lightning, transformers); skip (fail under CI=1) when it
    is not installed."""
    import importlib
    try:
        return importlib.import_module(package)
    except ImportError:
        _missing(f"the {package} extra is not installed",
                 f"pip install -e '.[{package}]' installs it", module_level=True)
