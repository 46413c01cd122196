"""The gradient proxies' cost against the training step they ride on (issue 5's budget:
at most 5% of a step). For each model: one Adam training step at batch 64 (forward,
backward, update); right after one (untimed), the proxy update of one step as
``TicketSearch`` runs it
(``Proxies.update``: every prunable weight, the dispatched backend, C++ on CPU and Triton
on a GPU, or the PyTorch reference; the full update of every 3rd step and the movement
update of the others, and the full update of a search built with ``movement=False``,
its only one); and the whole ``TicketSearch.step`` with ``variants=0`` (proxies plus
keeping the batch for calibration), with and without movement, which is what a training
loop pays per step for the default estimator without random-subset searches.

    python -m pytest bench/bench_proxies.py --benchmark-only --benchmark-group-by=param:name
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bingo import TicketSearch, reference
from bingo.engine.dispatch import select_backend
from bingo.harness.models import build_model

BATCH = 64
ROUNDS = 200
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=["lenet300", "paper-mlp", "convnet"])
def setup(request):
    torch.manual_seed(0)
    model = build_model(request.param).to(DEVICE)
    search = TicketSearch(model, fraction=0.05, variants=0)  # fraction unused at K = 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (BATCH,), device=DEVICE)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return request.param, model, search, opt, x, y


def _train_step(model, opt, x, y) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    _sync()


def test_train_step(benchmark, setup):
    name, model, _, opt, x, y = setup
    benchmark.group = name
    benchmark(_train_step, model, opt, x, y)


def _after_a_training_step(benchmark, setup, fn) -> None:
    """Time ``fn`` right after an (untimed) training step, as in a training loop: the
    step evicts the proxies' sums from the caches, so ``fn`` reads them from memory.
    (Timed back to back instead, the LeNet update ran about 3x faster, from warm caches.)"""
    _, model, _, opt, x, y = setup
    benchmark.pedantic(fn, setup=lambda: _train_step(model, opt, x, y), rounds=ROUNDS,
                       warmup_rounds=5)


@pytest.mark.parametrize("update", ["full", "movement", "full-without-movement"])
@pytest.mark.parametrize("backend", ["dispatched", "torch"])
def test_proxy_update(benchmark, setup, backend, update):
    """``full``: all three sums (every ``proxy_every``-th step); ``movement``: movement
    alone (the steps in between); ``full-without-movement``: fisher and reset, the only
    update of a search built with ``movement=False``."""
    name, model, search, *_ = setup
    if update == "full-without-movement":
        search = TicketSearch(model, fraction=0.05, variants=0, movement=False)
    ops = select_backend(DEVICE) if backend == "dispatched" else reference
    params = dict(model.named_parameters())
    benchmark.group = name
    benchmark.extra_info["backend"] = backend

    def update_once():
        with torch.no_grad():
            search.proxies.update(ops, params, search.reset_values(),
                                  full=update != "movement")
        _sync()
    _after_a_training_step(benchmark, setup, update_once)


@pytest.mark.parametrize("movement", [True, False])
def test_search_step_without_variants(benchmark, setup, movement):
    name, model, search, _, x, y = setup
    if not movement:
        search = TicketSearch(model, fraction=0.05, variants=0, movement=False)
    benchmark.group = name

    def step():
        search.step(x, y)
        _sync()
    _after_a_training_step(benchmark, setup, step)
