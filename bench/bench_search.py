"""Ticket-search overhead: one search step against one plain forward and one training step.

Matrix: model (LeNet-300-100, a small conv net) x batch (64, 512) x K (1, 4, 16, 64)
x mode, with p = 0.05, rule "paper", metric "loss". Modes:

* ``naive``:  the reference loop (BINGO_BACKEND=torch): one forward per variant;
* ``vmap``:   torch.func.vmap over the K stacked weight sets, reference masks;
* ``cpp``:    the C++ backend (CPU only): batched pass, sparse first-layer correction;
* ``triton``: the Triton backend (CUDA only): one-launch masked Linear, fused accumulation.

Plus ``test_accumulate``: the fused significance update's throughput, reported as GB/s
of rule state read and written (extra_info["GB/s"]).

Runs on CUDA when a GPU is present, else on the CPU. Run, then tabulate (bench/README.md):

    python -m pytest bench/bench_search.py --benchmark-only --data-dir DIR \\
        --benchmark-json bench/results.json
    python bench/report.py bench/results.json
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import bingo
from bingo.engine import batched, reference
from bingo.engine.reference import SearchPlan
from bingo.engine.rules import RULES, SearchChange
from bingo.engine.targets import Target
from bingo.harness.models import convnet, lenet300

FRACTION = 0.05
MODELS = {"lenet300": lenet300, "convnet": convnet}
BATCHES = (64, 512)
VARIANTS = (1, 4, 16, 64)
MODES = ("naive", "vmap", "cpp", "triton")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", params=[(m, b) for m in MODELS for b in BATCHES],
                ids=lambda p: f"{p[0]}-b{p[1]}")
def setup(request):
    name, batch = request.param
    torch.manual_seed(0)
    data_dir = request.config.getoption("--data-dir", None) or os.environ.get("BINGO_DATA")
    if data_dir:
        from bingo.harness.data import load_mnist
        split = load_mnist(data_dir).train
        x, y = split.images[:batch], split.labels[:batch]
    else:  # timings do not depend on the pixel values
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    model = MODELS[name]().to(DEVICE)
    return name, batch, model, x.to(DEVICE), y.to(DEVICE)


def _group(benchmark, setup):
    name, batch = setup[:2]
    benchmark.group = f"{name} b{batch} {DEVICE.type}"
    benchmark.extra_info.update(model=name, batch=batch, device=DEVICE.type)


def test_forward(benchmark, setup):
    _, _, model, x, _ = setup
    model.eval()

    def forward():
        with torch.no_grad():
            model(x)
        _sync()
    _group(benchmark, setup)
    benchmark.extra_info["kind"] = "forward"
    benchmark(forward)


def test_train_step(benchmark, setup):
    _, _, model, x, y = setup
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        _sync()
    _group(benchmark, setup)
    benchmark.extra_info["kind"] = "train"
    benchmark(train_step)


def _vmap_evaluate(plan, targets, current, initial, batch):
    return batched.evaluate_vmapped(plan, targets, current, initial, batch, ops=reference)


@pytest.mark.parametrize("k", VARIANTS)
@pytest.mark.parametrize("mode", MODES)
def test_search_step(benchmark, setup, mode, k, monkeypatch):
    _, _, model, x, y = setup
    if mode == "cpp" and (DEVICE.type != "cpu" or not bingo.available_backends()["cpp"]):
        pytest.skip("the C++ backend runs on CPU tensors, with bingo._cpu built")
    if mode == "triton" and not bingo.available_backends()["triton"]:
        pytest.skip("the Triton backend needs a CUDA GPU and triton")
    backend = {"naive": "torch", "vmap": "torch"}.get(mode, mode)
    monkeypatch.setenv("BINGO_BACKEND", backend)
    if mode == "vmap":
        monkeypatch.setattr(reference, "evaluate_variants", _vmap_evaluate)
    search = bingo.TicketSearch(model, fraction=FRACTION, variants=k)
    assert search.backend == backend
    _group(benchmark, setup)
    benchmark.extra_info.update(kind="search", mode=mode, k=k)
    benchmark(search.step, x, y)


ACCUMULATE_SIZE = 1 << 26 if DEVICE.type == "cuda" else 1 << 22


@pytest.mark.parametrize("k", (1, 16))
@pytest.mark.parametrize("rule", ("paper", "mean"))
def test_accumulate(benchmark, rule, k):
    """The fused update of the compiled backend of this device, on one big target."""
    backend = bingo.select_backend(DEVICE)
    if backend is reference:
        pytest.skip("no compiled backend for this device (C++ not built / triton missing)")
    n = ACCUMULATE_SIZE
    target = Target("w", "", "weight", None, torch.Size([n]), 0, n)
    r = RULES[rule]
    state = r.init_state(torch.Size([n]), torch.float32, DEVICE)
    plan = SearchPlan(7, 3, k, 13, "weight", n)
    changes = [SearchChange(0.1 * i, 0.01 * i) for i in range(k)]

    def step():
        backend.accumulate(plan, [target], r, [state], changes)
        _sync()
    benchmark.group = f"accumulate {DEVICE.type}"
    benchmark.extra_info.update(kind="accumulate", rule=rule, k=k, elements=n,
                                bytes=2 * n * 4 * len(state), device=DEVICE.type)
    benchmark(step)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = round(benchmark.extra_info["bytes"] /
                                             benchmark.stats.stats.median / 1e9, 2)
