"""Overhead of one ticket-search step, against one plain forward and one training step.

LeNet-300-100, batch 512, K = 16 variants, p = 0.05, per backend. Run (see bench/README.md):

    python -m pytest bench/bench_search.py --benchmark-only --data-dir DIR

Real MNIST images are used when --data-dir / BINGO_DATA is given, else random
inputs of the same shape (timings do not depend on the pixel values).
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import bingo
from bingo import TicketSearch
from bingo.models import lenet300

BATCH, VARIANTS, FRACTION = 512, 16, 0.05


@pytest.fixture(scope="module")
def setup(request):
    torch.manual_seed(0)
    data_dir = request.config.getoption("--data-dir", None) or os.environ.get("BINGO_DATA")
    if data_dir:
        from bingo.data import load_mnist
        split = load_mnist(data_dir).train
        x, y = split.images[:BATCH], split.labels[:BATCH]
    else:
        x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    model = lenet300()
    search = TicketSearch(model, fraction=FRACTION, variants=VARIANTS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, search, opt, x, y


def test_forward(benchmark, setup):
    model, _, _, x, _ = setup
    model.eval()

    def forward():
        with torch.no_grad():
            model(x)
    benchmark.group = "lenet300 b512"
    benchmark(forward)


def test_train_step(benchmark, setup):
    model, _, opt, x, y = setup
    model.train()

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    benchmark.group = "lenet300 b512"
    benchmark(train_step)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_search_step_k16(benchmark, setup, backend, monkeypatch):
    model, search, _, x, y = setup
    if not bingo.available_backends()[backend]:
        pytest.skip(f"backend {backend} is not built here")
    monkeypatch.setenv("BINGO_BACKEND", backend)
    benchmark.group = "lenet300 b512"
    benchmark.extra_info["backend"] = search.backend
    benchmark(search.step, x, y)
