"""The regression of each search's damage on its subset's feature sums (bingo.engine.regression):
it recovers a known linear model, keeps feature coefficients non-negative, reads the
same subsets on every backend, and the estimator built on it is wired through
TicketSearch, state_dict, the prune job and compare."""
import pytest
import torch

import bingo
from bingo.engine import cpp, reference
from bingo.engine.reference import SearchPlan
from bingo.engine.regression import COLUMNS, FEATURES, SubsetRegression
from bingo.engine.rules import SearchChange
from bingo.engine.subsets import fraction_to_threshold
from bingo.engine.targets import select_targets
from bingo.harness.compare import CompareJob
from bingo.harness.prune_job import PruneJob, run_prune_job
from bingo.harness.models import mlp
from tests import margins, needs
from tests.test_search import snapshot, train_steps

K = 6


def _problem(seed, beta_sign=None):
    """Targets of awkward sizes, true coefficients (features > 0, taylor signed)."""
    gen = torch.Generator().manual_seed(seed)
    targets = select_targets(mlp([29, 37, 11]))
    beta = {}
    for t in targets:
        b = torch.rand(len(COLUMNS), generator=gen, dtype=torch.float64) + 0.5
        b[-1] = -b[-1]  # the nuisance column may take any sign
        beta[t.name] = b
    return targets, beta, gen


def _observe(backend, reg, targets, beta, gen, steps, device="cpu"):
    total = sum(t.size for t in targets)
    for step in range(steps):
        plan = SearchPlan(7, step, K, fraction_to_threshold(0.3), "weight", total)
        feats = [torch.rand(t.size, len(COLUMNS), generator=gen) for t in targets]
        for f in feats:
            f[:, -1] = torch.randn(f.shape[0], generator=gen)
        masks = reference.subset_masks(plan, range(K), targets, torch.device("cpu"))
        offset = float(torch.randn((), generator=gen)) * 10  # the step's drift: removed
        damage = sum(m.double() @ f.double() @ beta[t.name]
                     for m, f, t in zip(masks, feats, targets)) + offset
        changes = [SearchChange(relative=0.0, damage=float(d)) for d in damage]
        reg.observe(backend, plan, targets, [f.to(device) for f in feats], changes)


def test_recovers_a_linear_damage_model_within_steps(fresh_seed):
    targets, beta, gen = _problem(fresh_seed)
    reg = SubsetRegression(targets)
    _observe(reference, reg, targets, beta, gen, steps=40)
    assert reg.steps == 40 and reg.observations == 40 * K
    got = reg.coefficients()
    for t in targets:
        torch.testing.assert_close(got[t.name], beta[t.name], rtol=1e-5, atol=1e-6)
    assert reg.explained() == pytest.approx(1.0, abs=1e-6)


def test_feature_coefficients_stay_non_negative(fresh_seed):
    targets, beta, gen = _problem(fresh_seed)
    beta[targets[0].name][FEATURES.index("reset")] = -2.0  # an implausible true sign
    reg = SubsetRegression(targets)
    _observe(reference, reg, targets, beta, gen, steps=30)
    got = reg.coefficients()
    for t in targets:
        assert (got[t.name][:len(FEATURES)] >= 0).all()
    assert got[targets[0].name][FEATURES.index("reset")] == 0.0
    assert got[targets[0].name][-1] < 0  # the free column keeps its sign


@pytest.mark.parametrize("backend_name", ["cpp", "triton"])
def test_every_backend_reads_the_same_subsets(backend_name, fresh_seed, kernel_device):
    if backend_name == "cpp":
        needs.cpp_backend()
        backend, device = cpp, "cpu"
    else:
        needs.triton()
        from bingo.kernels import ops as backend
        device = kernel_device
    targets, beta, _ = _problem(fresh_seed)
    mine, ref = SubsetRegression(targets), SubsetRegression(targets)
    _observe(backend, mine, targets, beta, torch.Generator().manual_seed(fresh_seed), 5, device)
    _observe(reference, ref, targets, beta, torch.Generator().manual_seed(fresh_seed), 5)
    # float32 sums in another order (a GPU's reductions) differ by ~2e-5 of the largest
    # entry, and the signed nuisance column's sums cancel, so its entries' relative error
    # is large; a different subset would move the entries by far more than 1e-4 of it
    for got, want in ((mine.gram, ref.gram), (mine.moment, ref.moment)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * want.abs().max().item())


def test_search_feeds_the_regression_every_n_steps(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = mlp([784, 21, 10])
    search = bingo.TicketSearch(model, fraction=0.1, variants=4, seed=fresh_seed,
                                regression_every=2)
    train_steps(model, mnist.train, 7, search=search)
    assert search.regression.steps == 4  # steps 0, 2, 4, 6
    assert search.regression.observations == 16
    assert 0.0 <= search.regression.explained() <= 1.0 + 1e-9
    report = search.regression.report()
    assert report["steps"] == 4 and set(report["coefficients"]["fc1.weight"]) == set(COLUMNS)
    before = snapshot(model)
    scores = search.significance("regression")
    after = snapshot(model)
    for a, b in zip(before[0].values(), after[0].values()):
        assert torch.equal(a, b)
    assert torch.equal(before[3], after[3])
    assert {n: s.shape for n, s in scores.items()} == {
        "fc1.weight": model.fc1.weight.shape, "fc2.weight": model.fc2.weight.shape}
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())
    # resumed from its state, a fresh search holds the same fit
    twin = bingo.TicketSearch(model, fraction=0.1, variants=4, seed=fresh_seed,
                              regression_every=2)
    twin.load_state_dict(search.state_dict())
    for n, b in search.regression.coefficients().items():
        assert torch.equal(twin.regression.coefficients()[n], b)


def test_regression_scores_are_each_layers_coefficients_times_its_features(mnist, fresh_seed):
    """Each weight's score worked out from its own layer's coefficients and its proxies:
    obd = ½ F̄ w², reset = R / steps, distance = w² (pruning's reset target is 0). With
    24 steps of 6 variants the two layers' fits differ (on 40 seeds, and on 55 of 0-59 in
    tests/margins.py, the largest difference at least 0.016; with 4 steps of 4 the fits
    of both layers were all zero on 3 seeds of 40), so a score from the wrong layer's fit
    shows."""
    torch.manual_seed(fresh_seed)
    model = mlp([784, 21, 10])
    search = bingo.TicketSearch(model, fraction=0.1, variants=6, seed=fresh_seed,
                                regression_every=1)
    train_steps(model, mnist.train, 24, search=search)
    scores = search.significance("regression")
    beta, steps = search.regression.coefficients(), search.proxies.steps
    margins.record("regression: the layers' fits differ",
                   float((beta["fc1.weight"][:3] - beta["fc2.weight"][:3]).abs().max()))
    assert not torch.equal(beta["fc1.weight"][:3], beta["fc2.weight"][:3])
    for i, t in enumerate(search.targets):
        w = model.get_parameter(t.name).detach().double()
        sums = {k: v.double() for k, v in search.proxies.sums[i].items()}
        b = dict(zip(COLUMNS, beta[t.name].tolist()))
        want = (b["obd"] * 0.5 * (sums["fisher"] / steps) * w * w
                + b["reset"] * sums["reset"] / steps + b["distance"] * w * w)
        torch.testing.assert_close(scores[t.name].double(), want, rtol=1e-5,
                                   atol=1e-6 * float(want.abs().max()))


def test_regression_needs_its_searches(mnist, fresh_seed):
    model = mlp([784, 13, 10])
    off = bingo.TicketSearch(model, fraction=0.1, variants=4)
    train_steps(model, mnist.train, 2, search=off)
    assert off.regression.steps == 0
    with pytest.raises(ValueError, match="regression_every >= 1"):
        off.significance("regression")
    with pytest.raises(ValueError, match="regression_every must be an integer >= 0"):
        bingo.TicketSearch(model, fraction=0.1, variants=4, regression_every=-1)
    with pytest.raises(ValueError, match="--regression-every N"):
        CompareJob(methods=["magnitude", "bingo:regression"]).validate()
    with pytest.raises(ValueError, match="--regression-every N"):
        run_prune_job(PruneJob(estimator="regression", regression_every=4, variants=1))
    CompareJob(methods=["bingo:regression"], regression_every=4).validate()
