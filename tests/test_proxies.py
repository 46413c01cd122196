"""What a search keeps between training steps: the gradient proxies (every backend's
update against the reference, the sums a search folds in from the training gradients,
the kept operand addresses, sampling every proxy_every-th step) and the kept examples."""
import pytest
import torch
import torch.nn.functional as F

import bingo
from bingo.engine import cpp, reference
from bingo.engine.proxies import DEFAULT_PROXY_EVERY
from bingo.harness.data import batches
from bingo.harness.models import build_model, mlp
from tests import needs
from tests.test_search import snapshot, train_steps, trained_search

SHAPES = [(1,), (7, 3), (300, 785), (5, 3, 5, 5)]


def _proxy_inputs(shapes, seed, device="cpu", dtypes=None, offset=0):
    """Per shape, the op's six tensors (random, non-zero; the fisher and reset sums
    non-negative), as six lists: one entry per target, like the op takes them.
    ``offset``: each tensor a contiguous view that starts this many elements into its
    storage (not 16-byte aligned for an odd offset)."""
    gen = torch.Generator().manual_seed(seed)
    lists = [[], [], [], [], [], []]
    for i, shape in enumerate(shapes):
        dtype = dtypes[i] if dtypes else torch.float32
        n = torch.Size(shape).numel()
        t = [torch.randn(n + offset, generator=gen, dtype=dtype).to(device)[offset:].view(shape)
             for _ in range(6)]
        t[0], t[1] = t[0].abs(), t[1].abs()
        for column, x in zip(lists, t):
            column.append(x)
    return lists


def _check_proxy_backend(backend, shapes, seed, device="cpu", dtypes=None, offset=0):
    """The backend's ``proxy_update`` (all three sums; and without movement, passed as
    None) and ``movement_update`` (movement alone: operands 2, 3, 4) against the
    reference, twice so that the sums carry over."""
    decay = 0.5 + (seed % 1000) / 2000
    # (op, operands of _proxy_inputs (None: left out), scalars, which of them are written)
    cases = [("proxy_update", (0, 1, 2, 3, 4, 5), (decay,), (0, 1, 2)),
             ("proxy_update", (0, 1, None, 3, 4, 5), (decay,), (0, 1)),
             ("movement_update", (2, 3, 4), (), (0,))]
    for name, operands, scalars, written in cases:
        inputs = _proxy_inputs(shapes, seed, device, dtypes, offset)
        mine = [None if k is None else inputs[k] for k in operands]
        ref = [None if c is None else [x.cpu().clone() for x in c] for c in mine]
        for _ in range(2):
            getattr(backend, name)(*mine, *scalars)
            getattr(reference, name)(*ref, *scalars)
        originals = _proxy_inputs(shapes, seed, dtypes=dtypes, offset=offset)
        for j, k in enumerate(operands):
            if k is None:
                continue
            for got, want, old in zip(mine[j], ref[j], originals[k]):
                if j in written:
                    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)
                    assert not torch.equal(want, old), name  # the update did something
                else:
                    assert torch.equal(got.cpu(), old), name
        untouched = [k for k in range(6) if k not in operands]  # e.g. movement left out
        for k in untouched:
            for got, old in zip(inputs[k], originals[k]):
                assert torch.equal(got.cpu(), old), (name, k)


@pytest.mark.parametrize("shape", SHAPES)
def test_cpp_proxy_update_equals_reference(shape, fresh_seed):
    needs.cpp_backend()
    _check_proxy_backend(cpp, [shape], fresh_seed)


@pytest.mark.parametrize("shape", SHAPES)
def test_triton_proxy_update_equals_reference(shape, fresh_seed, kernel_device):
    needs.triton()
    from bingo.kernels import ops
    _check_proxy_backend(ops, [shape], fresh_seed, kernel_device)


def test_cpp_proxy_update_takes_every_target_in_one_call(fresh_seed):
    """Several targets of awkward sizes (chunks of the OpenMP pass straddle them), one of
    them float64 (left to the reference): all equal the reference."""
    needs.cpp_backend()
    shapes = [(300, 785), (7, 3), (1,), (8193,), (5, 3, 5, 5), (3, 8191)]
    _check_proxy_backend(cpp, shapes, fresh_seed)
    dtypes = [torch.float32, torch.float64, torch.float32]
    _check_proxy_backend(cpp, shapes[:3], fresh_seed, dtypes=dtypes)


@pytest.mark.parametrize("shapes, offset", [
    ([(7, 3), (1,), (1030,)], 0),  # sizes not multiples of 4: scalar accesses
    ([(300, 784), (8, 3), (1032,)], 0),  # multiples of 4 at aligned addresses: vectors
    ([(300, 784), (8, 3), (1032,)], 1)])  # the same sizes at unaligned addresses
def test_triton_proxy_update_takes_every_target_in_one_launch(shapes, offset, fresh_seed,
                                                              kernel_device):
    needs.triton()
    from bingo.kernels import ops, proxies
    from bingo.kernels.launch import elementwise_block
    _check_proxy_backend(ops, shapes, fresh_seed, kernel_device, offset=offset)
    # one table per op and target sizes: the same tensors again reuse it (on a GPU, as a
    # graph of the launch), and so do other tensors of the same sizes, their addresses
    # written into it (_check_proxy_backend's later cases went through both)
    tensors = _proxy_inputs(shapes, fresh_seed, kernel_device, offset=offset)
    proxies._LAUNCHES.clear()
    ops.proxy_update(*tensors, 0.9)
    ops.proxy_update(*tensors, 0.9)
    [launch] = proxies._LAUNCHES.values()
    assert launch.aligned == (offset == 0
                              and all(torch.Size(s).numel() % 4 == 0 for s in shapes))
    assert launch.programs == sum(-(-torch.Size(s).numel() // elementwise_block())
                                  for s in shapes)
    assert (launch.graph is not None) == (kernel_device.type == "cuda")
    others = _proxy_inputs(shapes, fresh_seed + 1, kernel_device, offset=offset)
    want = [[x.cpu().clone() for x in column] for column in others]
    ops.proxy_update(*others, 0.9)
    reference.proxy_update(*want, 0.9)
    assert list(proxies._LAUNCHES.values()) == [launch]  # the same table, repointed
    for got, ref in zip(others[:3], want[:3]):
        for g, r in zip(got, ref):
            torch.testing.assert_close(g.cpu(), r, rtol=1e-6, atol=1e-6)


def test_triton_proxy_table_filled_in_a_capture_equals_the_copied_one(fresh_seed,
                                                                       kernel_device):
    """Inside a caller's CUDA graph capture the address table is written by one fill per
    value instead of one copy from host memory; the two tables are equal (this runs on
    CPU too; the capture itself needs a GPU, next test)."""
    needs.triton()
    from bingo.kernels import proxies
    gen = torch.Generator().manual_seed(fresh_seed)
    sizes = [int(n) for n in torch.randint(1, 5000, (3,), generator=gen)]
    addresses = [16 * int(a) for a in torch.randint(1, 2**40, (3 * 6,), generator=gen)]
    copied = proxies._Launch(kernel_device, sizes, addresses)
    filled = proxies._Launch(kernel_device, sizes, addresses, capturing=True)
    assert torch.equal(copied.table, filled.table) and copied.programs == filled.programs


def test_triton_proxy_update_inside_a_cuda_graph_capture(fresh_seed):
    """A training step captured whole with the search in it: the proxy update goes into
    the caller's graph with its own table, and each replay updates the captured
    tensors, while the update outside the graph keeps working on others."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU to capture a CUDA graph; the table a capture fills "
                    "is checked on CPU by the test above")
    from bingo.kernels import ops
    shapes = [(300, 784), (8, 3), (1030,)]
    warm = _proxy_inputs(shapes, fresh_seed, "cuda")
    warm_ref = [[x.cpu().clone() for x in c] for c in warm]
    for _ in range(2):  # warm-up outside the capture: compiled, cached, its own graph
        ops.proxy_update(*warm, 0.9)
        reference.proxy_update(*warm_ref, 0.9)
    static = _proxy_inputs(shapes, fresh_seed + 1, "cuda")
    static_ref = [[x.cpu().clone() for x in c] for c in static]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ops.proxy_update(*static, 0.9)
    for _ in range(3):
        graph.replay()
        reference.proxy_update(*static_ref, 0.9)
        ops.proxy_update(*warm, 0.9)  # outside the graph, between its replays
        reference.proxy_update(*warm_ref, 0.9)
    torch.cuda.synchronize()
    for got, want in ((static, static_ref), (warm, warm_ref)):
        for column, ref in zip(got[:3], want[:3]):
            for g, r in zip(column, ref):
                torch.testing.assert_close(g.cpu(), r, rtol=1e-5, atol=1e-5)


def test_triton_proxy_update_without_graphs_warns_once_and_launches_plainly(fresh_seed,
                                                                            monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: only there is the proxy launch captured as a graph")
    from bingo.kernels import ops, proxies

    def refuse(*args, **kwargs):
        raise RuntimeError("no graphs here")
    monkeypatch.setattr(proxies, "_capture", refuse)
    monkeypatch.setattr(proxies, "_GRAPHS", [True])
    proxies._LAUNCHES.clear()
    with pytest.warns(RuntimeWarning, match="could not be captured as a CUDA graph"):
        _check_proxy_backend(ops, [(300, 784), (8, 3)], fresh_seed, "cuda")
    assert all(e.graph is None for e in proxies._LAUNCHES.values())


@pytest.mark.parametrize("reset_to", ["init", "zero"])
def test_search_accumulates_the_proxies_from_the_training_gradients(mnist, reset_to, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = mlp([784, 23, 10])
    search = bingo.TicketSearch(model, fraction=0.1, variants=2, seed=fresh_seed,
                                reset_to=reset_to, proxy_every=1)
    w0 = model.fc1.weight.detach().clone()
    target = w0 if reset_to == "init" else torch.zeros_like(w0)
    want = {k: torch.zeros_like(w0) for k in ("fisher", "reset", "movement")}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(fresh_seed)
    for i, (x, y) in enumerate(batches(mnist.train, 64, gen)):
        if i == 4:
            break
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        g, w = model.fc1.weight.grad, model.fc1.weight.detach()
        want["fisher"] += g * g
        want["reset"] += (g * (target - w)).abs()
        want["movement"] -= g * w
        search.step(x, y)
    assert search.proxies.steps == 4
    for k, v in want.items():
        torch.testing.assert_close(search.proxies.sums[0][k], v, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(search.proxies.mean_fisher(0), want["fisher"] / 4)
    x, y = search.calibration_batch()
    assert len(x) == len(y) == 256  # all 4 batches kept (fewer than calibration=2048)


@pytest.mark.parametrize("backend", ["cpp", "triton", "torch"])
def test_kept_proxy_addresses_follow_moved_weights_and_odd_gradients(mnist, backend,
                                                                     monkeypatch, fresh_seed,
                                                                     kernel_device):
    """The proxies keep their operands' addresses between steps (``_Addresses``): new
    gradients every step, a weight whose storage is swapped, a non-contiguous gradient,
    the reset target replaced (a state with other initial values loaded into the same
    search): the sums stay those of the formula on every backend."""
    monkeypatch.setenv("BINGO_BACKEND", backend)
    device = kernel_device if backend == "triton" else torch.device("cpu")
    torch.manual_seed(fresh_seed)
    model = mlp([784, 23, 10]).to(device)
    search = bingo.TicketSearch(model, variants=0, proxy_every=2)
    names = ("fc1.weight", "fc2.weight")
    initial = {n: search._initial[n].clone() for n in names}
    want = {k: [torch.zeros_like(initial[n]) for n in names]
            for k in ("fisher", "reset", "movement")}
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(fresh_seed)
    for i, (x, y) in enumerate(batches(mnist.train, 32, gen)):
        if i == 9:
            break
        x, y = x.to(device), y.to(device)
        opt.zero_grad()  # set_to_none: a new gradient tensor every step
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i == 2:  # the weight's storage swapped (same values, a new address)
            model.fc1.weight.data = model.fc1.weight.data.clone()
        if i == 3:  # a non-contiguous gradient (same values)
            model.fc1.weight.grad = model.fc1.weight.grad.t().contiguous().t()
            assert not model.fc1.weight.grad.is_contiguous()
        if i == 6:  # new reset targets: the same search resumed from other initial values
            state = search.state_dict()
            for n in names:
                initial[n] = state["initial"][n] = state["initial"][n] / 2
            search.load_state_dict(state)
        for j, (n, p) in enumerate(zip(names, (model.fc1.weight, model.fc2.weight))):
            g, w = p.grad, p.detach()
            if i % 2 == 0:
                want["fisher"][j] += g * g
                want["reset"][j] += (g * (initial[n] - w)).abs()
            want["movement"][j] -= g * w
        search.step(x, y)
        assert search.backend == backend
    for k, v in want.items():
        for j in range(2):
            torch.testing.assert_close(search.proxies.sums[j][k], v[j], rtol=1e-5, atol=1e-6)


def test_calibration_keeps_the_most_recent_examples(mnist, fresh_seed):
    """Batches of uneven sizes: the buffer always yields the last ``calibration`` examples
    seen (all of them while fewer), also after a state_dict round trip."""
    gen = torch.Generator().manual_seed(fresh_seed)
    model = mlp([784, 9, 10])
    make = lambda: bingo.TicketSearch(model, fraction=0.1, variants=0, calibration=100)
    search = make()
    seen_x, seen_y, start = [], [], 0
    for i in range(12):
        n = int(torch.randint(1, 60, (1,), generator=gen)) if i != 9 else 130  # > capacity
        x, y = mnist.train.images[start:start + n], mnist.train.labels[start:start + n]
        start += n
        seen_x.append(x)
        seen_y.append(y)
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        search.step(x, y)
        if i == 6:  # continue in a fresh search from the saved state
            state = search.state_dict()
            search = make()
            search.load_state_dict(state)
        got_x, got_y = search.calibration_batch()
        want_x, want_y = torch.cat(seen_x)[-100:], torch.cat(seen_y)[-100:]
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    x, y = mnist.train.images[:5], mnist.train.labels[:5]
    with pytest.raises(ValueError, match="calibration examples must share one shape"):
        search.step(x[:, :, :27], y)
    none = bingo.TicketSearch(model, fraction=0.1, variants=0, calibration=0)
    none.step(x, y)
    with pytest.raises(ValueError, match="no calibration examples"):
        none.calibration_batch()


def test_proxy_every_samples_fisher_and_reset_and_keeps_movement_every_step(mnist, fresh_seed):
    """By default fisher and reset are folded in on steps 0, 3, 6, ...; movement, a signed
    sum whose noise cancels only over consecutive steps, on every step."""
    model, search = trained_search(mnist, fresh_seed, steps=5, proxy_every=2)
    assert search.proxies.steps == 3  # steps 0, 2, 4
    torch.manual_seed(fresh_seed)
    model = mlp([784, 19, 10])
    every = bingo.TicketSearch(model, variants=0, proxy_every=1)
    default = bingo.TicketSearch(model, variants=0)
    assert default.proxy_every == DEFAULT_PROXY_EVERY == 3
    w0 = model.fc1.weight.detach().clone()
    want_fisher, want_reset = torch.zeros_like(w0), torch.zeros_like(w0)

    def observe(i, x, y):
        if i % 3 == 0:
            g, w = model.fc1.weight.grad, model.fc1.weight.detach()
            want_fisher.add_(g * g)
            want_reset.add_((g * (w0 - w)).abs())
        every.step(x, y)
        default.step(x, y)
    train_steps(model, mnist.train, 7, seed=fresh_seed, after_step=observe)
    assert default.proxies.steps == 3 and every.proxies.steps == 7
    sums = default.proxies.sums[0]
    torch.testing.assert_close(sums["fisher"], want_fisher, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(sums["reset"], want_reset, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(sums["movement"], every.proxies.sums[0]["movement"])
    assert not torch.equal(sums["fisher"], every.proxies.sums[0]["fisher"])
    with pytest.raises(ValueError, match="proxy_every must be an integer >= 1"):
        bingo.TicketSearch(model, fraction=0.1, variants=1, proxy_every=0)


def test_without_movement_the_sampled_proxies_are_the_same_and_movement_is_refused(
        mnist, fresh_seed):
    """movement=False skips the every-step pass: fisher and reset equal a search that
    collects movement too; movement estimators refuse; calibrated chooses among the rest."""
    torch.manual_seed(fresh_seed)
    model = mlp([784, 19, 10])
    both = bingo.TicketSearch(model, variants=0, calibration=256)
    still = bingo.TicketSearch(model, variants=0, calibration=256, movement=False)
    train_steps(model, mnist.train, 7, seed=fresh_seed,
                after_step=lambda i, x, y: (both.step(x, y), still.step(x, y)))
    assert still.proxies.steps == both.proxies.steps == 3 and still.step_count == 7
    for mine, theirs in zip(still.proxies.sums, both.proxies.sums):
        assert set(mine) == {"fisher", "reset"}
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), k
    for name in ("movement", "mag+movement"):
        with pytest.raises(ValueError, match="did not collect: build the TicketSearch with "
                                             "movement=True"):
            still.significance(name)
    before = snapshot(model)
    still.significance("calibrated", sparsity=0.8)
    assert set(still.last_calibration.losses) == {"magnitude", "fisher", "reset", "mag+fisher",
                                                  "mag+reset", "activation"}
    assert all(torch.equal(v, before[0][k]) for k, v in snapshot(model)[0].items())
    assert still.config()["movement"] is False
    twin = bingo.TicketSearch(model, variants=0, calibration=256, movement=False)
    twin.load_state_dict(still.state_dict())
    assert torch.equal(twin.proxies.sums[0]["reset"], still.proxies.sums[0]["reset"])
    with pytest.raises(ValueError, match="movement must be True or False"):
        bingo.TicketSearch(model, variants=0, movement="no")
    with pytest.raises(ValueError, match="movement: saved False vs here True"):
        bingo.TicketSearch(model, variants=0, calibration=256).load_state_dict(
            still.state_dict())


def test_no_variants_keeps_proxies_and_calibration_only(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed, steps=6, variants=0, proxy_every=1)
    assert search.totals.searches == 0 and search.proxies.steps == 6
    assert search.history == [] and search.step_count == 6  # K = 0: nothing measured
    scores = search.significance("budgeted", sparsity=0.8)
    assert set(scores) == {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_step_without_gradients_warns_and_the_proxies_refuse(batch):
    model = build_model("paper-mlp")
    search = bingo.TicketSearch(model, fraction=0.1, variants=1)
    with pytest.warns(RuntimeWarning, match="no gradient"):
        search.step(*batch)
    with pytest.raises(ValueError, match="proxies saw no step"):
        search.significance("fisher")
