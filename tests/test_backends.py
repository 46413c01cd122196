"""Backends against the PyTorch reference: bit-identical masks, scores and searches."""
import pytest
import torch

import bingo
from bingo.engine import cpp, dispatch, reference
from bingo.engine.reference import SearchPlan
from bingo.engine.rules import RULES, SearchChange
from bingo.engine.subsets import subset_mask
from bingo.engine.targets import select_targets
from bingo.harness.models import lenet300
from tests import needs
from tests.test_search import train_steps


@pytest.fixture(autouse=True)
def need_cpp():
    needs.cpp_backend()


@pytest.fixture(params=["portable", "avx2", "avx512"])
def philox_isa(request):
    """Each Philox path of the C++ backend in turn (the CPU's best is the default)."""
    needs.cpp_backend()
    if request.param not in cpp._cpu.philox_isas():
        pytest.skip(f"this CPU cannot run the C++ backend's {request.param} Philox path "
                    f"(it has {cpp._cpu.philox_isas()}); a machine with it runs this case")
    before = cpp._cpu.philox_isa()
    cpp._cpu.set_philox_isa(request.param)
    yield request.param
    cpp._cpu.set_philox_isa(before)


@pytest.mark.parametrize("start,numel", [(0, 1), (0, 16), (5, 27), (16, 1000), (13, 266_203)])
def test_cpp_masks_equal_reference(start, numel, fresh_seed, philox_isa):
    seed = fresh_seed | (fresh_seed << 32)  # both key words in play
    step = (fresh_seed % 7) << 32 | 12345   # both step words too
    variants = [0, 3, 7, 2 ** 31 + 5]
    for threshold in (1, 13, 128, 255):
        got = torch.from_numpy(cpp._cpu.subset_masks(seed, step, variants, start, numel, threshold))
        assert torch.equal(got, subset_mask(seed, step, variants, start, numel, threshold))


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_cpp_accumulate_equals_reference(rule, granularity, fresh_seed, philox_isa):
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


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize("batch_size", [1, 37, 130])  # around TILE = 64 columns
def test_cpp_linear_variants_match_reference(granularity, batch_size, fresh_seed, philox_isa):
    gen = torch.Generator().manual_seed(fresh_seed)
    layer = torch.nn.Linear(45, 29)  # awkward sizes: rows straddle Philox spans
    targets = select_targets(torch.nn.Sequential(torch.nn.Linear(3, 45), layer),
                             granularity=granularity)
    t = targets[1]
    plan = SearchPlan(fresh_seed, fresh_seed % 1000, 11, 40, granularity,
                      sum(x.size for x in targets))
    w, b = torch.randn(29, 45, generator=gen), torch.randn(29, generator=gen)
    w0, b0 = torch.randn(29, 45, generator=gen), torch.randn(29, generator=gen)
    chunk = [0, 3, 4, 10]
    for x in (torch.randn(batch_size, 45, generator=gen),         # shared input
              torch.randn(len(chunk), batch_size, 45, generator=gen)):  # one per variant
        base = torch.nn.functional.linear(x, w, b) if x.dim() == 2 else None
        want = reference.linear_variants(plan, chunk, t, x, w, w0, b, b0)
        got = cpp.linear_variants(plan, chunk, t, x, w, w0, b, b0, base=base)
        assert got.shape == want.shape == (len(chunk), batch_size, 29)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        plain = torch.nn.functional.linear(x, w, b)
        assert not torch.allclose(want, plain.expand_as(want))  # the variants differ


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_cpp_masked_weights_equal_reference(granularity, fresh_seed, philox_isa):
    gen = torch.Generator().manual_seed(fresh_seed)
    targets = select_targets(torch.nn.Sequential(torch.nn.Conv2d(3, 7, 3), torch.nn.Flatten(),
                                                 torch.nn.Linear(5, 3)), granularity=granularity)
    plan = SearchPlan(fresh_seed, 3, 21, 70, granularity, sum(x.size for x in targets))
    for t in targets:
        w, w0 = torch.randn(t.shape, generator=gen), torch.randn(t.shape, generator=gen)
        chunk = [2, 5] + list(range(6, 21)) + [0]  # enough that some unit is reset
        got = cpp.masked_weights(plan, chunk, t, w, w0)
        assert torch.equal(got, reference.masked_weights(plan, chunk, t, w, w0))
        assert (got == w0).any() and (got == w).any()


@pytest.mark.parametrize("rule,granularity,metric", [("paper", "weight", "loss"),
                                                     ("contrast", "neuron", "loss"),
                                                     ("mean", "weight", "accuracy")])
def test_search_matches_reference_across_backends(mnist, rule, granularity, metric, monkeypatch):
    """Same seed, several steps: the C++ backend's evaluation agrees with the reference's
    within float32 rounding (a flipped near-tie changes accuracy by 1/B), and so do the
    significance scores built from it."""
    results = {}
    for backend in ("torch", "cpp"):
        monkeypatch.setenv("BINGO_BACKEND", backend)
        torch.manual_seed(0)
        model = lenet300()
        search = bingo.TicketSearch(model, fraction=0.1, variants=9, rule=rule,
                                    granularity=granularity, metric=metric, seed=11)
        train_steps(model, mnist.train, 4, search=search)
        assert search.backend == backend
        results[backend] = (search.rule_significance(), search.history)
    (s_ref, h_ref), (s_cpp, h_cpp) = results["torch"], results["cpp"]
    tol = dict(rtol=1e-4, atol=1e-6) if metric == "loss" else dict(rtol=0, atol=1.5 / 64)
    for a, b in zip(h_ref, h_cpp):
        assert abs(a.before - b.before) <= 1e-6 * max(1.0, abs(a.before))
        torch.testing.assert_close(torch.tensor(b.after), torch.tensor(a.after), **tol)
        assert len(set(a.after)) > 1  # the variants differ from each other
    for name, s in s_ref.items():
        if metric == "loss":
            torch.testing.assert_close(s_cpp[name], s, rtol=1e-3, atol=1e-6)
        else:  # equal wherever no accuracy near-tie flipped: nearly everywhere
            assert (s_cpp[name] == s).float().mean() > 0.99


def test_cpp_philox_paths_are_named_and_an_unknown_one_refused():
    assert cpp._cpu.philox_isa() == cpp._cpu.philox_isas()[-1]  # the best by default
    with pytest.raises(ValueError, match="cannot run the Philox path 'sse9'"):
        cpp._cpu.set_philox_isa("sse9")


def test_cpp_refuses_arrays_it_would_have_to_copy():
    for bad in (torch.zeros(10, dtype=torch.float64), torch.zeros(20)[::2]):
        with pytest.raises(ValueError, match="C-contiguous float32"):
            cpp._cpu.accumulate_halving(bad.numpy(), 0, 0, 0, 13, [0.5])


def test_dispatch(monkeypatch):
    monkeypatch.delenv("BINGO_BACKEND", raising=False)
    assert dispatch.select_backend("cpu") is cpp
    available = bingo.available_backends()
    assert available["cpp"] is True and available["torch"] is True
    assert available["triton"] == (torch.cuda.is_available() and dispatch.triton_ops() is not None)
    monkeypatch.setenv("BINGO_BACKEND", "torch")
    assert dispatch.select_backend("cpu") is reference
    monkeypatch.setenv("BINGO_BACKEND", "fortran")
    with pytest.raises(ValueError, match="not a backend"):
        dispatch.select_backend("cpu")


def test_a_forced_cpp_backend_that_is_not_built_is_refused_with_the_fix(monkeypatch, batch):
    """BINGO_BACKEND=cpp where the extension did not build raises and says what to do (a
    search step too, before it changes anything); unforced, the CPU falls back to the
    reference with a warning."""
    monkeypatch.setattr(cpp, "available", lambda: False)
    monkeypatch.setattr(dispatch, "_chosen", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setenv("BINGO_BACKEND", "cpp")
    refused = r"BINGO_BACKEND=cpp was requested but that backend is not available.*unset " \
              r"BINGO_BACKEND or set it to 'torch'"
    with pytest.raises(RuntimeError, match=refused):
        dispatch.select_backend("cpu")
    search = bingo.TicketSearch(lenet300(), fraction=0.1, variants=2)
    with pytest.raises(RuntimeError, match=refused):
        search.step(*batch)
    assert search.step_count == 0 and search.totals.searches == 0
    monkeypatch.delenv("BINGO_BACKEND")
    with pytest.warns(RuntimeWarning, match="C\\+\\+ backend is not built"):
        assert dispatch.select_backend("cpu") is reference
    assert bingo.available_backends()["cpp"] is False


def test_dispatch_triton_on_cpu_only_under_the_interpreter(monkeypatch):
    if dispatch.triton_ops() is None:
        monkeypatch.setenv("BINGO_BACKEND", "triton")
        with pytest.raises(RuntimeError, match="triton cannot be imported"):
            dispatch.select_backend("cpu")
        return
    monkeypatch.setenv("BINGO_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="BINGO_BACKEND=triton runs on CUDA tensors"):
        dispatch.select_backend("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.select_backend("cpu") is dispatch.triton_ops()


def test_compiled_backends_take_checked_addresses_under_the_same_names():
    """``bingo.engine.proxies`` calls ``proxy_update_at`` / ``movement_update_at`` on whichever
    compiled backend was dispatched: both backends have them, with the same parameters."""
    import inspect
    triton_ops = dispatch.triton_ops()
    for name in ("proxy_update_at", "movement_update_at"):
        params = [list(inspect.signature(getattr(m, name)).parameters) for m in (cpp, triton_ops)]
        assert params[0] == params[1], name
    assert not hasattr(reference, "movement_update_at")  # Proxies then takes the tensor ops
