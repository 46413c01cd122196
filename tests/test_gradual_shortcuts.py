"""The gradual events' two shortcuts give what the plain way gives: the search copies only
the batches the next event can read (``GradualTicketPruning._read_at_next_event``), and one
stable sort of the kept magnitudes gives magnitude's cut, the mixtures' magnitude ranks
and LAMP's per-layer orders (``candidates.square_order_from``). Each is checked against
the plain way, on real MNIST batches of awkward sizes."""
import pytest
import torch
import torch.nn.functional as F

from bingo.evidence.candidates import (
    SQUARE_ORDER_PIECES,
    SQUARE_ORDER_RANGE,
    lamp_scores,
    lowest,
    square_order_from,
    stable_order,
    stable_ranks,
)
from bingo.harness.models import paper_mlp
from bingo.pruning.gradual_ticket import GradualTicketPruning


def _run(mnist, sizes, seed, *, keep_all=False, stop=None, calibration=64, every=15,
         **options):
    """Train paper-mlp on consecutive MNIST batches of ``sizes`` with the pruner after each
    step (``stop``: break off after that many steps); counts the batches the search copied."""
    torch.manual_seed(seed)
    model = paper_mlp()
    pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=len(sizes), every=every,
                                  calibration=calibration, **options)
    if keep_all:  # the plain way: every batch copied
        pruner._read_at_next_event = lambda batch: True
    copied = []
    add = pruner.search._calibration.add
    pruner.search._calibration.add = lambda x, y: (copied.append(len(x)), add(x, y))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    pruner.track(opt)
    start = 0
    for i, n in enumerate(sizes[:stop]):
        x = mnist.train.images[start:start + n]
        y = mnist.train.labels[start:start + n]
        start += n
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.step(x, y)
    report = pruner.finish()
    return model, pruner, report, copied


def test_copying_only_the_batches_an_event_reads_changes_nothing(mnist, fresh_seed):
    # 90 steps of 32; events at 9, 24, 39, 54, 68; a short batch inside event 24's window
    # (what an epoch's last batch does) and one more later, each alone in its window
    sizes = [32] * 90
    sizes[23], sizes[50] = 7, 5
    fast = _run(mnist, sizes, fresh_seed)
    plain = _run(mnist, sizes, fresh_seed, keep_all=True)
    (model, pruner, report, copied), (model0, pruner0, report0, copied0) = fast, plain
    assert pruner.schedule.events() == [9, 24, 39, 54, 68]
    assert len(copied0) == pruner.schedule.last + 1  # the plain way copies every batch
    assert len(copied) < 0.7 * len(copied0)  # the windows of 3, then 11 steps
    for e, e0 in zip(pruner.events, pruner0.events):
        e, e0 = dict(e), dict(e0)
        e.pop("seconds"), e0.pop("seconds")
        assert e == e0 and "short" not in e  # the same losses, bit for bit, and choices
    assert all(torch.equal(a, b) for a, b in zip(pruner.keep().values(),
                                                  pruner0.keep().values()))
    for a, b in zip(model.parameters(), model0.parameters()):
        assert torch.equal(a, b)
    assert report.sparsity == report0.sparsity > 0.89


def test_without_a_movement_candidate_the_search_skips_movement_and_changes_nothing(
        mnist, fresh_seed):
    sizes = [32] * 60
    lamp = ("magnitude", "lamp")
    model, pruner, report, _ = _run(mnist, sizes, fresh_seed, candidates=lamp)
    model0, pruner0, report0, _ = _run(mnist, sizes, fresh_seed, candidates=lamp,
                                       movement=True)
    assert not pruner.search.proxies.movement and pruner0.search.proxies.movement
    assert pruner0.search.proxies.columns["movement"][0].abs().sum() > 0  # it was summed
    assert "movement" not in pruner.search.proxies.columns  # no sums kept nor passed over
    for e, e0 in zip(pruner.events, pruner0.events):
        e, e0 = dict(e), dict(e0)
        e.pop("seconds"), e0.pop("seconds")
        assert e == e0
    assert pruner.chosen == pruner0.chosen
    assert all(torch.equal(a, b) for a, b in zip(pruner.keep().values(),
                                                  pruner0.keep().values()))
    for a, b in zip(model.parameters(), model0.parameters()):
        assert torch.equal(a, b)
    assert report.sparsity == report0.sparsity > 0.89
    default = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100)
    assert default.search.proxies.movement  # mag+movement reads it


def test_a_window_that_fell_short_is_noted_and_every_batch_is_kept_after(mnist, fresh_seed):
    # calibration 96 of batches of 32: a window of 4 steps; two short batches in event 24's
    # window leave it 22 examples short, so it measures on some older ones, and says so
    sizes = [32] * 90
    sizes[22], sizes[23] = 5, 5
    model, pruner, report, copied = _run(mnist, sizes, fresh_seed, calibration=96)
    notes = {e["step"]: e for e in pruner.events}
    assert notes[24].get("short") is True and "short" not in notes[9]
    assert len(copied) == pruner.schedule.last + 1 - 5 - 11  # skipped 1-5 and 10-20 only
    assert not any("short" in notes[s] for s in (39, 54, 68))


def test_a_run_stopped_between_windows_still_finishes_on_kept_examples(mnist, fresh_seed):
    sizes = [32] * 90
    model, pruner, report, copied = _run(mnist, sizes, fresh_seed, stop=30)
    assert len(copied) < 30 and len(pruner.search.calibration_batch()[1]) == 64
    assert abs(report.sparsity - 0.9) < 1e-3  # finish() pruned to the goal
    assert pruner.events[-1]["step"] == 29


def test_one_sort_of_the_magnitudes_gives_each_layer_s_square_order(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    sizes = [1, 37, 0, 1257]  # at most SQUARE_ORDER_PIECES: read off the one order
    w = torch.randn(sum(sizes), generator=g) * torch.logspace(-12, 3, sum(sizes))[
        torch.randperm(sum(sizes), generator=g)]
    w[torch.randperm(len(w), generator=g)[:200]] = w[:200].clone()  # ties, within and across
    w[::5] = -w[::5]
    magnitudes = w.abs()
    pieces = square_order_from(magnitudes, stable_order(magnitudes), sizes)
    for piece, order in zip(torch.split(w, sizes), pieces):
        assert torch.equal(order, stable_order((piece.double() ** 2).float()))
        assert torch.equal(lamp_scores(piece, order), lamp_scores(piece))
    low, high = SQUARE_ORDER_RANGE
    for outside in (low / 2, 0.0, high * 2):  # squares that tie or overflow: sort them
        v = magnitudes.clone()
        v[7] = outside
        assert square_order_from(v, stable_order(v), sizes) is None
    more = [1] * (SQUARE_ORDER_PIECES + 1)  # more pieces than one pass each pays for
    assert square_order_from(magnitudes[:len(more)], stable_order(magnitudes[:len(more)]),
                             more) is None


@pytest.mark.parametrize("tiny", [False, True])
def test_an_event_s_rankings_and_cuts_are_those_of_sorting_each(mnist, fresh_seed, tiny):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    pruner = GradualTicketPruning(model, sparsity=0.95, total_steps=100, calibration=64)
    opt = torch.optim.SGD(model.parameters(), 0.05)
    x, y = mnist.train.images[:640], mnist.train.labels[:640]
    for i in range(0, 640, 64):
        opt.zero_grad()
        F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
        pruner.search.step(x[i:i + 64], y[i:i + 64])
    with torch.no_grad():
        first = pruner._modules[pruner.names[0]][0]
        first.weight_mask.view(-1)[: first.weight_mask.numel() // 3] = 0  # some pruned
        if tiny:  # squares below float32's normal range: LAMP sorts each layer itself
            first.weight_orig.view(-1)[-5:] = torch.tensor([1e-30, -1e-30, 3e-31, 0.0, 2e-45])
    keep = pruner.keep()
    names = list(keep)
    flat_keep = torch.cat([keep[n].reshape(-1) for n in names])
    kept = flat_keep.nonzero().squeeze(1)
    rankings, orders = pruner._rankings(keep, kept)
    weights = pruner.weights()
    flat = torch.cat([weights[n].reshape(-1) for n in names])[kept]
    counts = [int(keep[n].sum()) for n in names]
    assert torch.equal(rankings["lamp"], torch.cat(
        [lamp_scores(w).float() for w in torch.split(flat, counts)]))
    index = {t.name: i for i, t in enumerate(pruner.search.targets)}
    movement = torch.cat([pruner.search.proxies.sums[index[n]]["movement"].reshape(-1)
                          for n in names])[kept]
    assert torch.equal(rankings["mag+movement"],
                       stable_ranks(flat.abs()) + stable_ranks(movement))
    more = len(kept) // 4
    cut = torch.zeros(len(kept), dtype=torch.bool)
    cut[orders["magnitude"][:more]] = True
    assert torch.equal(cut, lowest(flat.abs(), more))
    # and the event itself: with a margin nothing passes, it prunes magnitude's lowest
    pruner.margin = 1e9
    n = flat_keep.numel()
    sparsity = (n - len(kept) + more) / n
    more = round(sparsity * n) - (n - len(kept))
    expected = flat_keep.clone()
    expected[kept[lowest(flat.abs(), more)]] = False
    chosen = pruner.choose(sparsity)
    assert pruner.note()["chosen"] == "magnitude"
    assert torch.equal(torch.cat([chosen[k].reshape(-1) for k in names]), expected)
