"""Shared fixtures. Real MNIST comes from --data-dir or BINGO_DATA; without it the
data tests fail with a message (they are never skipped silently).

Without a GPU the Triton kernels run under Triton's CPU interpreter: TRITON_INTERPRET=1
must be set before any kernel is defined, so it is set here, before bingo is imported."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bingo.harness.data import load_mnist  # noqa: E402
from bingo.integrations.kernels_name import prefer_installed_kernels  # noqa: E402

# The tests run from the clone's root, whose kernels/ would shadow the `kernels`
# distribution that transformers imports (the tests import transformers directly).
prefer_installed_kernels()


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="folder holding MNIST/raw/ (default: $BINGO_DATA)")


@pytest.fixture(scope="session")
def data_dir(pytestconfig) -> Path:
    chosen = pytestconfig.getoption("--data-dir") or os.environ.get("BINGO_DATA")
    if not chosen:
        pytest.fail("these tests read real MNIST: pass --data-dir DIR or set BINGO_DATA=DIR "
                    "(DIR contains MNIST/raw/)")
    return Path(chosen)


@pytest.fixture(scope="session")
def mnist(data_dir):
    return load_mnist(data_dir)


@pytest.fixture(scope="session")
def cifar10(data_dir):
    from bingo.harness.data import load_cifar10
    return load_cifar10(data_dir)


@pytest.fixture
def batch(mnist):
    """A real MNIST batch of 64 training images."""
    return mnist.train.images[:64], mnist.train.labels[:64]


@pytest.fixture
def fresh_seed() -> int:
    """A new seed every run, printed so a failure can be replayed: BINGO_TEST_SEED=N
    runs with seed N instead (tests/margins.py runs the statistical tests over many)."""
    chosen = os.environ.get("BINGO_TEST_SEED")
    seed = int(chosen) if chosen else int.from_bytes(os.urandom(4), "little")
    print(f"fresh seed: {seed}")
    return seed


@pytest.fixture(scope="session")
def kernel_device() -> torch.device:
    """Where the Triton kernels run in these tests: the GPU, else the CPU interpreter."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    assert os.environ.get("TRITON_INTERPRET") == "1", "conftest sets TRITON_INTERPRET=1 without a GPU"
    return torch.device("cpu")
