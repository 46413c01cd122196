"""The estimators: what each one scores, what the calibrated one measures and chooses
(exactly the mask it reports), and that none of them touches the user's model (a
BatchNorm + Dropout model in train mode, with gradients, stays bit-identical). What a
search keeps for them between steps is tested in test_proxies.py."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bingo
from bingo.engine import reference
from bingo.evidence import calibrated, candidates, estimators
from bingo.evidence.meter import Meter, layer_ranks
from bingo.harness.compare import CompareJob, run_compare
from bingo.harness.models import build_model, mlp
from bingo.pruning.masks import prune
from tests.test_search import bn_dropout_net, snapshot, train_steps, trained_search


def test_reset_to_zero_evaluates_the_subset_removed(batch, fresh_seed):
    x, y = batch
    torch.manual_seed(fresh_seed)
    model = mlp([784, 17, 10])
    search = bingo.TicketSearch(model, fraction=0.3, variants=3, seed=fresh_seed,
                                reset_to="zero")
    with torch.no_grad():  # move away from init so init and zero differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    record = search.step(x, y)
    plan = search.plan(0)
    masks = reference.subset_masks(plan, range(3), search.targets, torch.device("cpu"))
    for k in range(3):
        overrides = {t.name: torch.where(m[k].view(t.shape), torch.zeros(()),
                                         dict(model.named_parameters())[t.name].detach())
                     for t, m in zip(search.targets, masks)}
        out = torch.func.functional_call(model.eval(), overrides, (x,))
        assert record.after[k] == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5)
    model.train()


def test_single_proxy_estimators_score_what_they_say(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed)
    w = model.fc2.weight.detach()
    sums = search.proxies.sums[1]
    torch.testing.assert_close(search.significance("magnitude")["fc2.weight"], w.abs())
    torch.testing.assert_close(search.significance("fisher")["fc2.weight"],
                               0.5 * sums["fisher"] / search.proxies.steps * w * w)
    torch.testing.assert_close(search.significance("movement")["fc2.weight"], sums["movement"])
    torch.testing.assert_close(search.significance("reset")["fc2.weight"], sums["reset"])
    mix = search.significance("mag+movement")
    assert all(0 <= float(v.min()) and float(v.max()) < 1 for v in mix.values())
    assert torch.equal(search.significance("search")["fc1.weight"],
                       search.rule_significance()["fc1.weight"])


def test_budget_scores_prune_exactly_the_budgets(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    scores = {"a.weight": torch.randn(37, 11, generator=gen),
              "b.weight": torch.randn(13, 5, generator=gen), "c.weight": torch.randn(3, generator=gen)}
    pruned = {"a.weight": 300, "b.weight": 7, "c.weight": 0}
    out = calibrated.budget_scores(scores, pruned)
    order = torch.sort(torch.cat([v.reshape(-1) for v in out.values()]), stable=True).indices
    gone = torch.zeros(order.numel(), dtype=torch.bool)
    gone[order[:307]] = True
    parts = torch.split(gone, [v.numel() for v in out.values()])
    for (name, s), part in zip(scores.items(), parts):
        assert int(part.sum()) == pruned[name]
        # within a layer the lowest original scores go first
        if pruned[name]:
            assert s.reshape(-1)[part].max() <= s.reshape(-1)[~part].min()


def test_budgeted_chooses_the_lowest_measured_loss_and_leaves_the_model_alone(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed)
    before = snapshot(model)
    rng = torch.get_rng_state()
    model.train()
    scores = search.significance("budgeted", sparsity=0.8)
    report = search.last_calibration
    assert report.chosen == min(report.losses, key=report.losses.get)
    assert set(report.losses) == set(candidates.PROXY_ESTIMATORS + candidates.MIXTURES
                                     + candidates.DATA_CANDIDATES)
    assert report.examples == 512 and report.evaluations > len(report.losses)
    for k, v in snapshot(model)[0].items():
        assert torch.equal(v, before[0][k])
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    # pruning by the scores gives the chosen budgets and the measured loss
    m = copy.deepcopy(model)
    rep = prune(m, scores, sparsity=0.8)
    for name, layer in rep.layers.items():
        assert layer.pruned == round(report.budgets[report.chosen][name] * layer.numel), name
    x, y = search.calibration_batch()
    with torch.no_grad():
        loss = float(F.cross_entropy(m.eval()(x), y))
    assert loss == pytest.approx(report.losses[report.chosen], rel=1e-4)
    # and no worse than magnitude's global ranking on the same batch
    g = copy.deepcopy(model)
    prune(g, search.significance("magnitude"), sparsity=0.8)
    with torch.no_grad():
        assert loss <= float(F.cross_entropy(g.eval()(x), y)) + 1e-6


def test_refit_aware_calibration_chooses_the_lowest_loss_after_a_refit(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed)
    before = snapshot(model)
    model.train()
    scores = search.significance("calibrated", sparsity=0.9, refit=True)
    report = search.last_calibration
    losses = report.refit_losses
    own = f"budgeted ({report.chosen})"
    assert set(losses) == set(candidates.available(search)) | {own, "calibrated"}
    assert report.refit_chosen == min(losses, key=losses.get)
    for k, v in snapshot(model)[0].items():
        assert torch.equal(v, before[0][k])
    assert torch.equal(torch.get_rng_state(), before[3]) and model.training
    # the scores prune the chosen mask, whose refit loss is the one recorded
    x, y = search.calibration_batch()
    m = copy.deepcopy(model)
    prune(m, scores, sparsity=0.9)
    bingo.refit(m, model, x)
    with torch.no_grad():
        loss = float(F.cross_entropy(m.eval()(x), y))
    assert loss == pytest.approx(losses[report.refit_chosen], rel=1e-5)
    assert loss <= losses["magnitude"] and loss <= losses["calibrated"]
    with pytest.raises(ValueError, match="pass refit=False"):
        search.significance("magnitude", refit=True)


def test_refit_aware_losses_of_a_batchnorm_model_are_its_deployed_losses(mnist, fresh_seed):
    """With BatchNorm, a refit candidate is measured on the dense running statistics, as
    it is deployed (a kept refit is not followed by a re-estimate)."""
    torch.manual_seed(fresh_seed)
    model = bn_dropout_net()
    search = bingo.TicketSearch(model, variants=0, calibration=256, seed=fresh_seed)
    train_steps(model, mnist.train, 12, seed=fresh_seed, search=search)
    scores = search.significance("calibrated", sparsity=0.8, refit=True)
    report = search.last_calibration
    x, y = search.calibration_batch()
    m = copy.deepcopy(model)
    prune(m, scores, sparsity=0.8)
    fit = bingo.refit(m, model, x, labels=y)
    with torch.no_grad():
        loss = float(F.cross_entropy(m.eval()(x), y))
    assert loss == pytest.approx(min(fit.loss_before, fit.loss_after), rel=1e-5)
    assert loss == pytest.approx(report.refit_losses[report.refit_chosen], rel=1e-5)


def test_budget_balancing_measures_each_split_once_and_ends_at_a_local_minimum(mnist,
                                                                              fresh_seed):
    _, search = trained_search(mnist, fresh_seed)
    meter = Meter(search)
    scores = search.significance("mag+reset")
    splits = []
    real_loss = meter.loss

    def counting(ranks, pruned):
        splits.append(tuple(pruned.values()))
        return real_loss(ranks, pruned)
    meter.loss = counting
    pruned, best = calibrated.balance_budgets(meter, scores, 0.8)
    assert len(splits) == len(set(splits)) > 1  # every split measured once
    total = sum(s.numel() for s in scores.values())
    assert sum(pruned.values()) == round(0.8 * total)
    ranks = layer_ranks(scores)
    assert real_loss(ranks, pruned) == best
    step, smallest = max(1, sum(pruned.values()) // 20), max(1, sum(pruned.values()) // 2000)
    while step // 2 >= smallest:  # the last step size tried: halvings stop below smallest
        step //= 2
    for a in pruned:  # no move of the last step size lowers the loss any more
        for b in pruned:
            d = min(step, pruned[a], scores[b].numel() - pruned[b])
            if a != b and d > 0:
                trial = dict(pruned)
                trial[a] -= d
                trial[b] += d
                assert real_loss(ranks, trial) >= best - 1e-7


def test_calibrated_swaps_only_what_lowers_the_measured_loss(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed)
    before = snapshot(model)
    search.significance("budgeted", sparsity=0.85)
    budgeted = search.last_calibration
    for p in model.parameters():
        p.grad = None
    scores = search.significance(sparsity=0.85)  # the default: calibrated
    report = search.last_calibration
    assert report.chosen == budgeted.chosen
    assert report.loss_after_swaps <= report.losses[report.chosen]
    assert (report.swaps > 0) == (report.loss_after_swaps < report.losses[report.chosen])
    for k, v in snapshot(model)[0].items():
        assert torch.equal(v, before[0][k])
    assert all(p.grad is None for p in model.parameters())  # gradients went elsewhere
    m = copy.deepcopy(model)
    rep = prune(m, scores, sparsity=0.85)
    n = sum(s.numel() for s in scores.values())
    assert sum(layer.pruned for layer in rep.layers.values()) == round(0.85 * n)
    x, y = search.calibration_batch()
    with torch.no_grad():
        loss = float(F.cross_entropy(m.eval()(x), y))
    assert loss == pytest.approx(report.loss_after_swaps, rel=1e-4)
    for name, layer in rep.layers.items():
        assert layer.pruned == round(report.final_budgets[name] * layer.numel), name


def test_units_removes_whole_low_scoring_units(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed, granularity="neuron", rule="contrast",
                                    reset_to="zero")
    scores = search.significance("units", sparsity=0.7)
    for name, a in {n: s > 0 for n, s in scores.items()}.items():  # units kept or removed whole
        assert torch.equal(a.any(dim=1), a.all(dim=1))
    units = search.unit_significance()
    alive = estimators.surviving_units(search, units, 0.5)
    for name, rows in (("fc1.weight", 128), ("fc2.weight", 64)):
        kept = alive[name].all(dim=1)
        assert int((~kept).sum()) == rows // 2
        assert units[name][~kept].max() <= units[name][kept].min()  # the lowest go
    assert bool(alive["fc3.weight"].all())  # output units are never removed


def test_estimator_errors_name_the_problem(mnist, fresh_seed):
    model, search = trained_search(mnist, fresh_seed, steps=2)
    with pytest.raises(ValueError, match="unknown estimator 'obd'"):
        search.significance("obd")
    with pytest.raises(ValueError, match=r"sparsity must be a fraction in \(0, 1\)"):
        search.significance(sparsity=1.5)
    with pytest.raises(ValueError, match="granularity='neuron'"):
        search.significance("units")
    fresh = bingo.TicketSearch(build_model("paper-mlp"), fraction=0.1, variants=1)
    with pytest.raises(ValueError, match="no calibration examples"):
        fresh.significance()
    with pytest.raises(ValueError, match="reset_to must be one of"):
        bingo.TicketSearch(model, fraction=0.1, variants=1, reset_to="mean")


def test_diverged_steps_are_named_instead_of_ranked(mnist, fresh_seed):
    """Sums or kept examples holding inf/NaN would give scores at random: the estimators
    say which tensor diverged (a step with inf gradients, as a GradScaler skips, or a
    non-finite batch kept for calibration), and the scores of a clean search still come."""
    model, search = trained_search(mnist, fresh_seed, steps=4, proxy_every=1)
    clean = search.significance("mag+reset")
    x, y = mnist.train.images[:64], mnist.train.labels[:64]
    _, kept = trained_search(mnist, fresh_seed, steps=4, proxy_every=1, variants=0)
    model.fc2.weight.grad[7, 3] = float("inf")  # what torch.amp leaves on a skipped step
    search.step(x, y)
    for estimator in ("fisher", "magnitude", "calibrated"):
        with pytest.raises(FloatingPointError, match="fisher proxy of 'fc2.weight' holds inf"):
            search.significance(estimator)
    kept.step(torch.where(torch.rand_like(x) < 0.01, float("nan"), x), y)
    n = len(kept.calibration_batch()[1])  # 5 steps of 64
    with pytest.raises(FloatingPointError, match=f"non-finite loss on the {n} kept calibration"):
        kept.significance("calibrated")
    for n, scores in kept.significance("mag+reset").items():  # the proxies are still clean
        assert torch.isfinite(scores).all() and scores.shape == clean[n].shape, n


def test_compare_estimator_rows_share_one_run(data_dir):
    """bingo:magnitude scores the search's trained model by |w|; the search changes no
    weight, so it matches the magnitude method trained without a search exactly."""
    job = CompareJob(model="paper-mlp", data_dir=str(data_dir), epochs=1, train_limit=512,
                     methods=("magnitude", "bingo:magnitude", "bingo"), sparsities=(0.7,),
                     variants=2)
    results = run_compare(job, progress=False, log=lambda m: None)
    acc = {m["method"]: m["points"][0]["test_accuracy"] for m in results["methods"]}
    assert acc["magnitude"] == acc["bingo:magnitude"]
    assert results["calibrations"][0]["method"] == "bingo"
    assert results["calibrations"][0]["sparsity"] == 0.7


def _global_ranks_by_numpy(tensors):
    """Each value's place in one stable ascending order of all of them, over the count:
    ``candidates.global_ranks`` worked out here with numpy instead."""
    flat = np.concatenate([t.detach().reshape(-1).double().numpy() for t in tensors])
    ranks = np.empty(len(flat))
    ranks[np.argsort(flat, kind="stable")] = np.arange(len(flat)) / len(flat)
    pieces = np.split(ranks, np.cumsum([t.numel() for t in tensors])[:-1])
    return [torch.from_numpy(p).view(t.shape) for p, t in zip(pieces, tensors)]


def test_mixtures_average_the_global_ranks_of_magnitude_and_their_proxy(mnist, fresh_seed):
    """mag+<proxy> = 0.5 * (global rank of |w| + global rank of the proxy), every proxy
    computed here from the sums and the weights."""
    model, search = trained_search(mnist, fresh_seed, proxy_every=1)
    weights = [model.get_parameter(t.name).detach() for t in search.targets]
    sums, steps = search.proxies.sums, search.proxies.steps
    proxies = {"fisher": [0.5 * (s["fisher"] / steps) * w * w for s, w in zip(sums, weights)],
               "reset": [s["reset"] for s in sums], "movement": [s["movement"] for s in sums]}
    magnitude = _global_ranks_by_numpy([w.abs() for w in weights])
    n = sum(w.numel() for w in weights)
    for proxy, values in proxies.items():
        got = search.significance(f"mag+{proxy}")
        ranks = _global_ranks_by_numpy(values)
        for t, mag, other in zip(search.targets, magnitude, ranks):
            want = 0.5 * (mag + other)
            torch.testing.assert_close(got[t.name].double(), want, rtol=0, atol=0.25 / n)
            assert not torch.allclose(want, mag, atol=0.01), proxy  # the proxy matters


@pytest.mark.parametrize("estimator,refit", [("budgeted", False), ("calibrated", False),
                                             ("calibrated", True)])
def test_the_report_keeps_the_measured_mask_and_the_scores_prune_exactly_it(mnist, estimator,
                                                                             refit):
    """``last_calibration.keep`` is the mask the estimator measured last: its loss on the
    kept examples, computed here, is the one reported, and pruning the returned scores at
    the sparsity gives exactly that mask, weight for weight. Seed 0 is pinned: there the
    swap search accepts swaps (3 on this machine; on 2 of seeds 1000-1059 it accepted
    none), so the calibrated mask differs from the budgeted one it started from."""
    model, search = trained_search(mnist, 0)
    budgeted = search.significance("budgeted", sparsity=0.85)
    budgeted_keep = search.last_calibration.keep
    scores = search.significance(estimator, sparsity=0.85, refit=refit)
    report = search.last_calibration
    names = [t.name for t in search.targets]
    assert set(report.keep) == set(scores) == set(names)
    n = sum(k.numel() for k in report.keep.values())
    assert sum(int((~k).sum()) for k in report.keep.values()) == round(0.85 * n)
    pruned = copy.deepcopy(model)
    prune(pruned, scores, sparsity=0.85)
    for name in names:
        mask = pruned.get_submodule(name.rpartition(".")[0]).weight_mask
        assert torch.equal(mask.bool(), report.keep[name]), name
        assert report.final_budgets[name] == 1.0 - float(report.keep[name].double().mean())
    x, y = search.calibration_batch()
    masked = {name: model.get_parameter(name).detach() * report.keep[name] for name in names}
    with torch.no_grad():
        loss = float(F.cross_entropy(torch.func.functional_call(model.eval(), masked, (x,)), y))
    model.train()
    if refit:
        assert report.refit_chosen == min(report.refit_losses, key=report.refit_losses.get)
        bingo.refit(pruned, model, x, labels=y)
        with torch.no_grad():
            refit_loss = float(F.cross_entropy(pruned.eval()(x), y))
        assert refit_loss == pytest.approx(report.refit_losses[report.refit_chosen], rel=1e-5)
    elif estimator == "calibrated":
        assert report.swaps > 0
        assert loss == pytest.approx(report.loss_after_swaps, rel=1e-5)
        assert any(not torch.equal(report.keep[k], budgeted_keep[k]) for k in names)
    else:
        assert loss == pytest.approx(report.losses[report.chosen], rel=1e-5)
        assert all(torch.equal(budgeted[k], scores[k]) for k in names)  # one deterministic run


@pytest.mark.parametrize("estimator,refit", [("budgeted", False), ("calibrated", False),
                                             ("calibrated", True), ("units", False)])
def test_estimators_leave_a_batchnorm_dropout_model_bit_identical(mnist, estimator, refit,
                                                                  fresh_seed):
    """A model in train mode with BatchNorm (running statistics, a batch counter), Dropout
    and a module that draws from the RNG, with gradients already there: every measuring
    estimator leaves parameters, gradients, buffers, modes and the RNG state exactly so."""
    torch.manual_seed(fresh_seed % 10_000)
    model = bn_dropout_net()
    units = estimator == "units"
    search = bingo.TicketSearch(model, variants=3 if units else 0, seed=fresh_seed,
                                calibration=256, granularity="neuron" if units else "weight",
                                rule="contrast" if units else "paper",
                                reset_to="zero" if units else "init")
    train_steps(model, mnist.train, 6, seed=fresh_seed, search=search)
    model.train()
    x, y = mnist.train.images[:64], mnist.train.labels[:64]
    F.cross_entropy(model(x), y).backward()  # gradients present, BN counter at 7
    before = snapshot(model)
    scores = search.significance(estimator, sparsity=0.8, refit=refit)
    after = snapshot(model)
    assert set(scores) == {"fc1.weight", "fc2.weight"}
    for k, v in before[0].items():  # parameters and buffers
        assert torch.equal(v, after[0][k]), k
    assert before[1] == after[1] and all(before[1].values())  # every module in train mode
    for k, (g, requires) in before[2].items():
        assert torch.equal(g, after[2][k][0]) and requires == after[2][k][1], k
    assert torch.equal(before[3], after[3])  # the RNG state
    assert int(model.bn.num_batches_tracked) == 7
