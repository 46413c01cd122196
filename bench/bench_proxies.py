"""The gradient proxies' cost against the training step they ride on (issue 5's budget:
at most 5% of a step). For each model: one Adam training step at batch 64 (forward,
backward, update), and one step's proxy update over all prunable weights on the
dispatched backend (C++ on CPU, Triton on a GPU) and on the PyTorch reference.

    python -m pytest bench/bench_proxies.py --benchmark-only --benchmark-group-by=param:name
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bingo import reference
from bingo.dispatch import select_backend
from bingo.models import build_model
from bingo.targets import select_targets

BATCH = 64
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=["lenet300", "paper-mlp", "convnet"])
def setup(request):
    torch.manual_seed(0)
    model = build_model(request.param).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (BATCH,), device=DEVICE)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    targets = select_targets(model)
    states = [[torch.zeros_like(params[t.name]) for _ in range(3)] for t in targets]
    init = {t.name: params[t.name].detach().clone() for t in targets}
    return request.param, model, opt, x, y, params, targets, states, init


def test_train_step(benchmark, setup):
    name, model, opt, x, y, *_ = setup
    benchmark.group = name

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        _sync()
    benchmark(step)


@pytest.mark.parametrize("backend", ["dispatched", "torch"])
def test_proxy_update(benchmark, setup, backend):
    name, model, opt, x, y, params, targets, states, init = setup
    ops = select_backend(DEVICE) if backend == "dispatched" else reference
    benchmark.group = name
    benchmark.extra_info["backend"] = backend

    def update():
        for t, (f, r, m) in zip(targets, states):
            p = params[t.name]
            ops.proxy_update(f, r, m, p.grad, p.detach(), init[t.name], 1.0)
        _sync()
    benchmark(update)
