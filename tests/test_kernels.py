"""The Triton kernels against the PyTorch reference, on random inputs of awkward shapes
(never multiples of the block sizes), with fresh seeds. Without a GPU they run on CPU
tensors under TRITON_INTERPRET=1 (set by conftest); the tests marked ``gpu`` need the
compiled kernels and are skipped, with the reason, on a machine without one."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests import needs

triton = needs.triton(module_level=True)

from bingo.kernels import ops  # noqa: E402

import bingo  # noqa: E402
from bingo.engine import reference  # noqa: E402
from bingo.engine.reference import SearchPlan  # noqa: E402
from bingo.engine.rules import RULES, SearchChange  # noqa: E402
from bingo.engine.subsets import subset_mask  # noqa: E402
from bingo.engine.targets import select_targets  # noqa: E402
from bingo.harness.models import mlp  # noqa: E402
from tests.test_search import train_steps  # noqa: E402

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU for compiled Triton kernels; the same "
                                      "kernels are checked on CPU under TRITON_INTERPRET=1 by "
                                      "the other tests in this file")


def _randn(shape, gen, device, dtype=torch.float32):
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


@pytest.mark.parametrize("start,numel", [(0, 1), (5, 27), (13, 3001)])
def test_subset_masks_equal_reference(start, numel, fresh_seed, kernel_device):
    from bingo.kernels import masks
    seed = fresh_seed | (fresh_seed << 32)    # both key words in play
    step = (fresh_seed % 7) << 32 | 0xFFFFFFF1  # both step words too
    variants = [0, 3, 4, 5, 2 ** 31 + 5]         # runs of different strides
    for threshold in (1, 13, 255):
        got = masks.subset_masks(seed, step, variants, start, numel, threshold, kernel_device)
        want = subset_mask(seed, step, variants, start, numel, threshold)
        assert torch.equal(got.cpu(), want)


def _conv_and_linear(granularity):
    net = nn.Sequential(nn.Conv2d(3, 7, 3), nn.Flatten(), nn.Linear(45, 29))
    targets = select_targets(net, granularity=granularity)
    return targets, sum(t.size for t in targets)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_masked_weights_and_bias_equal_reference(granularity, fresh_seed, kernel_device):
    gen = torch.Generator().manual_seed(fresh_seed)
    targets, total = _conv_and_linear(granularity)
    plan = SearchPlan(fresh_seed, 9, 21, 70, granularity, total)
    chunk = [2, 5] + list(range(6, 21)) + [0]  # runs of several strides; some unit reset
    for t in targets:
        w, w0 = _randn(t.shape, gen, kernel_device), _randn(t.shape, gen, kernel_device)
        got = ops.masked_weights(plan, chunk, t, w, w0)
        want = reference.masked_weights(plan, chunk, t, w.cpu(), w0.cpu())
        assert torch.equal(got.cpu(), want)
        assert (want == w0.cpu()).any() and (want == w.cpu()).any()
        b, b0 = _randn(t.shape[0], gen, kernel_device), _randn(t.shape[0], gen, kernel_device)
        got_b = ops.variant_bias(plan, chunk, t, b, b0)
        want_b = reference.variant_bias(plan, chunk, t, b.cpu(), b0.cpu())
        assert (got_b is None) == (want_b is None) == (granularity == "weight")
        if want_b is not None:
            assert torch.equal(got_b.cpu(), want_b)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize("batch_size,with_bias", [(1, True), (37, False), (70, True)])
def test_linear_variants_match_reference(granularity, batch_size, with_bias, fresh_seed,
                                         kernel_device):
    gen = torch.Generator().manual_seed(fresh_seed)
    targets, total = _conv_and_linear(granularity)
    t = targets[1]  # Linear 45 -> 29
    plan = SearchPlan(fresh_seed, fresh_seed % 1000, 11, 40, granularity, total)
    w, w0 = _randn((29, 45), gen, kernel_device), _randn((29, 45), gen, kernel_device)
    b, b0 = (_randn(29, gen, kernel_device), _randn(29, gen, kernel_device)) if with_bias \
        else (None, None)
    chunk = [0, 3, 4, 10]
    for x in (_randn((batch_size, 45), gen, kernel_device),               # shared input
              _randn((len(chunk), batch_size, 45), gen, kernel_device)):  # one per variant
        cpu = [None if v is None else v.cpu() for v in (x, w, w0, b, b0)]
        want = reference.linear_variants(plan, chunk, t, *cpu)
        got = ops.linear_variants(plan, chunk, t, x, w, w0, b, b0)
        assert got.shape == want.shape == (len(chunk), batch_size, 29)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(want, F.linear(*cpu[:2], cpu[3]).expand_as(want))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_accumulate_equals_reference(rule, fresh_seed, kernel_device):
    gen = torch.Generator().manual_seed(fresh_seed)
    targets, total = _conv_and_linear("weight")
    r = RULES[rule]
    states = {side: [r.init_state(torch.Size([t.size]), torch.float32, device)
                     for t in targets]
              for side, device in (("ref", torch.device("cpu")), ("triton", kernel_device))}
    for step in range(3):
        k = 1 + step * 5  # K = 1, 6, 11: crosses the reference's chunk of 8
        plan = SearchPlan(fresh_seed, step, k, 60, "weight", total)
        changes = [SearchChange(float(a), float(b)) for a, b in
                   zip(torch.rand(k, generator=gen), torch.randn(k, generator=gen))]
        reference.accumulate(plan, targets, r, states["ref"], changes)
        ops.accumulate(plan, targets, r, states["triton"], changes)
    for a, b in zip(states["ref"], states["triton"]):
        for key in a:
            assert torch.equal(a[key], b[key].cpu()), key
            assert not torch.all(a[key] == a[key].flatten()[0])  # something happened


def test_search_on_triton_matches_reference(mnist, monkeypatch, kernel_device):
    """A whole search (batched evaluation + fused accumulation) through the Triton backend:
    the same results as the reference within float32 rounding, over several steps."""
    results = {}
    for backend, device in (("torch", torch.device("cpu")), ("triton", kernel_device)):
        monkeypatch.setenv("BINGO_BACKEND", backend)
        torch.manual_seed(0)
        model = mlp([784, 23, 10]).to(device)
        search = bingo.TicketSearch(model, fraction=0.1, variants=9, seed=5)
        data = mnist.train if device.type == "cpu" else _to(mnist.train, device)
        train_steps(model, data, 3, search=search)
        assert search.backend == backend
        results[backend] = (search.rule_significance(), search.history)
    (s_ref, h_ref), (s_tri, h_tri) = results["torch"], results["triton"]
    for a, b in zip(h_ref, h_tri):
        assert abs(a.before - b.before) <= 1e-5 * max(1.0, abs(a.before))
        torch.testing.assert_close(torch.tensor(b.after), torch.tensor(a.after), rtol=1e-4,
                                   atol=1e-6)
    for name, s in s_ref.items():
        torch.testing.assert_close(s_tri[name].cpu(), s, rtol=1e-3, atol=1e-6)


def _to(split, device):
    from dataclasses import replace
    return replace(split, images=split.images.to(device), labels=split.labels.to(device))


@pytest.mark.gpu
@needs_gpu
def test_bf16_linear_variants_on_gpu(fresh_seed):
    """Compiled only (the interpreter has no bf16 tensor cores): bf16 inputs, float32
    accumulation, within bf16 rounding of the float32 reference."""
    gen = torch.Generator().manual_seed(fresh_seed)
    targets, total = _conv_and_linear("weight")
    plan = SearchPlan(fresh_seed, 1, 16, 13, "weight", total)
    cuda = torch.device("cuda")
    w, w0, b = (_randn(s, gen, cuda, torch.bfloat16) for s in ((29, 45), (29, 45), 29))
    x = _randn((130, 45), gen, cuda, torch.bfloat16)
    got = ops.linear_variants(plan, range(16), targets[1], x, w, w0, b, b)
    want = reference.linear_variants(plan, range(16), targets[1],
                                     *(v.float().cpu() for v in (x, w, w0, b, b)))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float().cpu(), want, rtol=2e-2, atol=5e-2)


@pytest.mark.gpu
@needs_gpu
def test_dispatch_picks_triton_for_cuda(monkeypatch):
    monkeypatch.delenv("BINGO_BACKEND", raising=False)
    assert bingo.available_backends()["triton"]
    assert bingo.select_backend("cuda") is ops


def test_kernels_compile_for_h100_without_a_gpu():
    """What the interpreter cannot see (compile-time rules, types, dot shapes): every kernel
    specialization the backend launches compiles to a cubin for sm_90, in a subprocess
    without TRITON_INTERPRET (no GPU needed)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run([sys.executable, "-m", "bingo.kernels.aot", "90"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if ": cubin " in line]
    assert len(lines) == 33 and all(int(line.split()[-2]) > 1000 for line in lines)
