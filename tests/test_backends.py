"""Backends against the PyTorch reference: bit-identical masks, scores and searches."""
import os

import pytest
import torch

import bingo
from bingo import cpp, dispatch, reference
from bingo.models import lenet300
from bingo.reference import SearchPlan
from bingo.rules import RULES, SearchChange
from bingo.subsets import subset_mask
from bingo.targets import select_targets
from tests.test_search import train_steps


@pytest.fixture(autouse=True)
def need_cpp():
    if not cpp.available():
        if os.environ.get("CI"):
            pytest.fail("the C++ backend did not build in CI (bingo._cpu is missing)")
        pytest.skip("the C++ backend is not built here (no compiler at install time)")


@pytest.mark.parametrize("start,numel", [(0, 1), (0, 16), (5, 27), (16, 1000), (13, 266_203)])
def test_cpp_masks_equal_reference(start, numel, fresh_seed):
    seed = fresh_seed | (fresh_seed << 32)  # both key words in play
    step = (fresh_seed % 7) << 32 | 12345   # both step words too
    variants = [0, 3, 7, 2 ** 31 + 5]
    for threshold in (1, 13, 128, 255):
        got = torch.from_numpy(cpp._cpu.subset_masks(seed, step, variants, start, numel, threshold))
        assert torch.equal(got, subset_mask(seed, step, variants, start, numel, threshold))


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_cpp_accumulate_equals_reference(rule, granularity, fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    targets = select_targets(lenet300(), granularity=granularity)
    total = sum(t.size for t in targets)
    r = RULES[rule]
    states = {name: [r.init_state(torch.Size([t.size]), torch.float32, torch.device("cpu"))
                     for t in targets] for name in ("torch", "cpp")}
    for step in range(4):
        k = 1 + step * 3  # K = 1, 4, 7, 10: a chunk boundary is crossed
        plan = SearchPlan(fresh_seed, step, k, 33, granularity, total)
        changes = [SearchChange(float(a), float(b)) for a, b in
                   zip(torch.rand(k, generator=gen), torch.randn(k, generator=gen))]
        reference.accumulate(plan, targets, r, states["torch"], changes)
        cpp.accumulate(plan, targets, r, states["cpp"], changes)
    for a, b in zip(states["torch"], states["cpp"]):
        for key in a:
            assert torch.equal(a[key], b[key]), key
            assert not torch.all(a[key] == a[key].flatten()[0])  # something happened


@pytest.mark.parametrize("rule,granularity,metric", [("paper", "weight", "loss"),
                                                     ("contrast", "neuron", "accuracy"),
                                                     ("mean", "weight", "accuracy")])
def test_search_is_bit_identical_across_backends(mnist, rule, granularity, metric, monkeypatch):
    results = {}
    for backend in ("torch", "cpp"):
        monkeypatch.setenv("BINGO_BACKEND", backend)
        torch.manual_seed(0)
        model = lenet300()
        search = bingo.TicketSearch(model, fraction=0.1, variants=9, rule=rule,
                                    granularity=granularity, metric=metric, seed=11)
        train_steps(model, mnist.train, 4, search=search)
        assert search.backend == backend
        results[backend] = (search.significance(), [(h.before, h.after) for h in search.history])
    assert results["torch"][1] == results["cpp"][1]
    for name, s in results["torch"][0].items():
        assert torch.equal(s, results["cpp"][0][name]), name


def test_cpp_refuses_arrays_it_would_have_to_copy():
    for bad in (torch.zeros(10, dtype=torch.float64), torch.zeros(20)[::2]):
        with pytest.raises(ValueError, match="C-contiguous float32"):
            cpp._cpu.accumulate_halving(bad.numpy(), 0, 0, 0, 13, [0.5])


def test_dispatch(monkeypatch):
    monkeypatch.delenv("BINGO_BACKEND", raising=False)
    assert dispatch.select_backend("cpu") is cpp
    assert bingo.available_backends() == {"torch": True, "cpp": True, "triton": False}
    monkeypatch.setenv("BINGO_BACKEND", "torch")
    assert dispatch.select_backend("cpu") is reference
    monkeypatch.setenv("BINGO_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="BINGO_BACKEND=triton was requested"):
        dispatch.select_backend("cpu")
    monkeypatch.setenv("BINGO_BACKEND", "fortran")
    with pytest.raises(ValueError, match="not a backend"):
        dispatch.select_backend("cpu")
