"""The calibrated estimator beyond PAIR_LAYERS targets (a ResNet, a transformer): the
bounded budget search (pairs ranked by one gradient's prediction per step size), the
screen of candidates, and the predictions against measured changes."""
from types import SimpleNamespace

import numpy as np
import torch

import bingo
from bingo.evidence import calibrated, candidates
from bingo.evidence.meter import Meter, layer_ranks
from bingo.harness.models import mlp
from tests import margins
from tests.test_search import train_steps


def test_budget_balancing_of_many_layers_ranks_pairs_by_one_gradient(mnist, fresh_seed,
                                                                    monkeypatch):
    """Beyond PAIR_LAYERS targets, each step size ranks the pairs of layers by the change
    one gradient at the current mask predicts, and measures PAIR_TRIALS of them at a time:
    one forward and backward plus PAIR_TRIALS forwards per step size on a flat loss, not
    n(n - 1) a round; steps stop at 1/MANY_FINEST of the total. The total is kept, the
    loss is never above the global ranking's split and near every pair's (1.05 x)."""
    torch.manual_seed(fresh_seed)
    model = mlp([784, 61, 47, 33, 29, 17, 10])  # six targets: 30 ordered pairs
    search = bingo.TicketSearch(model, seed=fresh_seed, calibration=256)
    train_steps(model, mnist.train, 30, seed=fresh_seed, search=search)
    scores = search.significance("mag+reset")
    ranks = layer_ranks(scores)
    runs, ways = {}, (("predicted", calibrated.PAIR_LAYERS), ("every pair", 6))
    for way, limit in ways:
        monkeypatch.setattr(calibrated, "PAIR_LAYERS", limit)
        meter = Meter(search)
        pruned, best = calibrated.balance_budgets(meter, scores, 0.85)
        runs[way] = (pruned, best, meter.evaluations)
        assert sum(pruned.values()) == round(0.85 * sum(x.numel() for x in scores.values()))
        assert meter.loss(ranks, pruned) == best
        start = calibrated.global_counts(scores, 0.85)
        assert best <= meter.loss(ranks, start)  # moves are kept only when they help
    predicted, every = runs["predicted"], runs["every pair"]
    margins.record("balancing: predicted loss under 1.05 x every pair's",
                   1.05 * every[1] - predicted[1])
    assert predicted[1] < 1.05 * every[1]
    assert predicted[2] < every[2]
    # Forwards on a flat loss (no move improves, every step size is tried once): six
    # layers with room for every move.
    gen = torch.Generator().manual_seed(fresh_seed)
    even = {f"layer{i}": torch.rand(997, generator=gen) for i in range(6)}
    calls, grads = [], []
    flat = SimpleNamespace(
        loss=lambda r, split: calls.append(split) or 1.0,
        loss_and_grad=lambda keep: grads.append(keep) or (1.0, {n: torch.randn(997, generator=gen)
                                                                for n in keep}),
        weights={n: torch.randn(997, generator=gen) for n in even},
        search=SimpleNamespace(targets=[SimpleNamespace(name=n) for n in even],
                               proxies=SimpleNamespace(mean_fisher=lambda i: torch.ones(997))))
    monkeypatch.setattr(calibrated, "PAIR_LAYERS", 4)
    calibrated.balance_budgets(flat, even, 0.5)
    total = round(0.5 * 6 * 997)
    sizes, step = 0, total // 20
    while step >= total // calibrated.MANY_FINEST:
        sizes, step = sizes + 1, step // 2
    assert len(grads) == sizes and len(calls) - 1 == sizes * calibrated.PAIR_TRIALS
    # A separable convex loss whose best split (same total) is known: every pair finds it.
    start = calibrated.global_counts(even, 0.5)
    best_split = dict(zip(even, (100, 300, 500, 600, 700, 791)))
    assert sum(best_split.values()) == sum(start.values()) == total
    bowl = SimpleNamespace(loss=lambda r, split: float(
        sum((split[n] - best_split[n]) ** 2 for n in split)))
    monkeypatch.setattr(calibrated, "PAIR_LAYERS", 6)
    pruned, best = calibrated.balance_budgets(bowl, even, 0.5)
    assert pruned == best_split and best == 0.0


def test_predicted_changes_follow_the_measured_ones(mnist, fresh_seed):
    """The change one gradient predicts for pruning a step more or fewer of each layer
    tracks the measured change across layers (what ranks the pairs beyond four
    targets): correlation above 0.9 over the 12 moves of six layers."""
    torch.manual_seed(fresh_seed)
    model = mlp([784, 61, 47, 33, 29, 17, 10])
    search = bingo.TicketSearch(model, seed=fresh_seed, calibration=256)
    train_steps(model, mnist.train, 30, seed=fresh_seed, search=search)
    scores = search.significance("mag+reset")
    ranks, meter = layer_ranks(scores), Meter(search)
    pruned = calibrated.global_counts(scores, 0.85)
    step = sum(pruned.values()) // 40
    fewer, more = calibrated.predicted_changes(meter, ranks, pruned, step)
    base = meter.loss(ranks, pruned)
    predicted, measured = [], []
    for n in pruned:
        for d, guess in ((-min(step, pruned[n]), fewer[n]),
                         (min(step, scores[n].numel() - pruned[n]), more[n])):
            trial = dict(pruned)
            trial[n] += d
            predicted.append(guess)
            measured.append(meter.loss(ranks, trial) - base)
    r = float(np.corrcoef(predicted, measured)[0, 1])
    # seeds 0-7: r at least 0.992
    margins.record("predicted changes: correlation above 0.9", r - 0.9)
    assert r > 0.9


def test_calibrated_on_many_layers_balances_only_the_screened_best(mnist, fresh_seed):
    """Beyond PAIR_LAYERS targets every candidate is measured at its global split and only
    the SCREEN best get their budgets balanced and swapped: the winner is one of them, and
    the measured forwards stay bounded (the screen, SCREEN balancings, MANY_SWAPS)."""
    torch.manual_seed(fresh_seed)
    model = mlp([784, 61, 47, 33, 29, 17, 10])
    search = bingo.TicketSearch(model, seed=fresh_seed, calibration=256)
    train_steps(model, mnist.train, 30, seed=fresh_seed, search=search)
    names = candidates.available(search)
    meter = Meter(search)
    at_global = {n: meter.loss(layer_ranks(s), calibrated.global_counts(s, 0.85))
                 for n, s in candidates.candidate_scores(search, names).items()}
    search.significance("calibrated", sparsity=0.85)
    report = search.last_calibration
    screened = sorted(at_global, key=at_global.get)[:calibrated.SCREEN]
    assert report.chosen in screened and set(report.losses) == set(names)
    for n in set(names) - set(screened):
        assert report.losses[n] == at_global[n]  # measured once, not balanced
    assert report.loss_after_swaps <= min(report.losses[n] for n in screened)
