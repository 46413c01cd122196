"""TicketSearch on real MNIST batches: it borrows the model without changing it,
evaluates exactly the subsets it can regenerate, and resumes bit-identically."""
import copy
import io
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bingo import TicketSearch
from bingo.engine.subsets import fraction_to_threshold
from bingo.harness.data import batches
from bingo.harness.models import lenet300, paper_mlp
from tests import margins
from tests.test_targets import independent_masks


class Jitter(nn.Module):
    """Draws from the global RNG on every forward, even in eval mode (as some user
    modules do), so a search that failed to restore the RNG state would show."""

    def forward(self, x):
        return x + 0.0 * torch.rand_like(x)


def bn_dropout_net() -> nn.Module:
    return nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(784, 37), bn=nn.BatchNorm1d(37), relu=nn.ReLU(),
        drop=nn.Dropout(0.5), jitter=Jitter(), fc2=nn.Linear(37, 10)))


def train_steps(model, data, n, lr=1e-3, seed=0, search=None, after_step=None):
    """n Adam steps on batches of 64; then ``search.step(x, y)`` and/or
    ``after_step(i, x, y)`` after each."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for i, (x, y) in enumerate(batches(data, 64, gen)):
        if i == n:
            break
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if search is not None:
            search.step(x, y)
        if after_step is not None:
            after_step(i, x, y)
    return opt


def trained_search(mnist, seed, steps=30, **options):
    """The paper MLP trained ``steps`` Adam steps with a search (K = 2, 512 kept examples
    unless ``options`` say otherwise) after each."""
    torch.manual_seed(seed)
    model = paper_mlp()
    search = TicketSearch(model, **{"fraction": 0.05, "variants": 2, "seed": seed,
                                    "calibration": 512, **options})
    train_steps(model, mnist.train, steps, seed=seed, search=search)
    return model, search


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
            {n: m.training for n, m in model.named_modules()},
            {n: (p.grad.clone() if p.grad is not None else None, p.requires_grad)
             for n, p in model.named_parameters()},
            torch.get_rng_state().clone())


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_step_leaves_model_buffers_mode_and_rng_untouched(mnist, batch, granularity, metric):
    torch.manual_seed(1)
    model = bn_dropout_net()
    search = TicketSearch(model, fraction=0.2, variants=5, metric=metric, granularity=granularity)
    train_steps(model, mnist.train, 3)
    model.train()
    model.drop.eval()  # a mixed mode must survive too
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    loss.backward()  # leave gradients in place: a search must not touch them
    before = snapshot(model)
    for _ in range(2):
        search.step(x, y)
    after = snapshot(model)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k  # parameters and BN running stats
    assert before[1] == after[1]
    for k, (g, rg) in before[2].items():
        assert torch.equal(g, after[2][k][0]) and rg == after[2][k][1], k
    assert torch.equal(before[3], after[3])
    assert model.bn.num_batches_tracked.item() == 4  # 3 training steps + 1 forward above


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_significance_has_parameter_shapes_dtypes_devices(batch, dtype, granularity):
    model = bn_dropout_net().to(dtype)
    search = TicketSearch(model, fraction=0.1, variants=3, granularity=granularity)
    x, y = batch
    search.step(x.to(dtype), y)
    sig = search.rule_significance()
    params = dict(model.named_parameters())
    assert set(sig) == {"fc1.weight", "fc2.weight"}  # Linear weights only: no bias, no BN
    for name, s in sig.items():
        assert s.shape == params[name].shape and s.dtype == dtype
        assert s.device == params[name].device and torch.isfinite(s).all()
    assert search.step_count == 1 and search.totals.searches == 3


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_evaluated_subsets_are_the_regenerated_ones(mnist, batch, granularity, fresh_seed,
                                                    monkeypatch):
    monkeypatch.setenv("BINGO_BACKEND", "torch")  # the specification: one forward per variant
    torch.manual_seed(fresh_seed % 1000)
    model = lenet300()
    search = TicketSearch(model, fraction=0.07, variants=11, granularity=granularity,
                          seed=fresh_seed)
    train_steps(model, mnist.train, 2)  # weights now differ from their initial values
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp, name=name: seen.append((name, mod.weight.clone(), mod.bias.clone())))
        for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    search.step(*batch)
    search.step(*batch)  # the second step must use new subsets
    for h in hooks:
        h.remove()
    layers = [t.module_name for t in search.targets]
    reset = 0
    params = dict(model.named_parameters())
    init = search.state_dict()["initial"]
    assert len(seen) == 2 * (1 + 11) * len(layers)
    calls = [seen[i:i + len(layers)] for i in range(0, len(seen), len(layers))]
    threshold = fraction_to_threshold(0.07)
    for step in range(2):
        expected = independent_masks(model, granularity, fresh_seed, step, range(11), threshold)
        first = calls[step * 12]
        for (name, w, b), t in zip(first, search.targets):  # unchanged model first
            assert torch.equal(w, params[t.name]) and torch.equal(b, params[f"{name}.bias"])
        for k in range(11):
            for (name, w, b), t in zip(calls[step * 12 + 1 + k], search.targets):
                m = expected[t.name][k]
                full = m.view(t.shape) if granularity == "weight" else t.expand_units(m)
                assert torch.equal(w, torch.where(full, init[t.name], params[t.name]))
                if granularity == "neuron":
                    bias = f"{name}.bias"
                    assert torch.equal(b, torch.where(m, init[bias], params[bias]))
                else:
                    assert torch.equal(b, params[f"{name}.bias"])
                reset += int(m.sum())
    assert reset > 0
    assert not torch.equal(calls[1][0][1], calls[13][0][1])


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_scores_follow_the_evaluated_subsets(mnist, batch, granularity, fresh_seed):
    """mean/contrast recomputed from the recorded metrics and the regenerated subsets."""
    torch.manual_seed(fresh_seed % 1000)
    model = lenet300()
    searches = {r: TicketSearch(copy.deepcopy(model), fraction=0.3, variants=5, rule=r,
                                seed=fresh_seed, granularity=granularity)
                for r in ("mean", "contrast")}
    train_steps(model, mnist.train, 3)  # move the weights away from their snapshot
    for search in searches.values():
        search.model.load_state_dict(model.state_dict())
        for s in range(3):
            search.step(mnist.train.images[64 * s:64 * (s + 1)],
                        mnist.train.labels[64 * s:64 * (s + 1)])
    search = searches["mean"]
    assert [r.after for r in search.history] == [r.after for r in searches["contrast"].history]
    damage = torch.tensor([a - r.before for r in search.history for a in r.after],
                          dtype=torch.float64)
    # the smallest |damage| was 0.031 on 55 seeds of 0-59 (tests/margins.py)
    margins.record(f"search ({granularity}): smallest |damage| over 1e-4",
                   float(damage.abs().min()) - 1e-4)
    assert (damage.abs() > 1e-4).all()  # every reset measurably changed the loss
    threshold = fraction_to_threshold(0.3)
    masks = [torch.cat([m.double() for m in independent_masks(
        model, granularity, fresh_seed, s, range(5), threshold).values()], dim=1)
        for s in range(3)]
    reset = torch.cat(masks)  # [searches, elements]
    count = reset.sum(0)
    total = reset.shape[0]
    mean_reset = (damage[:, None] * reset).sum(0) / count.clamp(min=1)
    mean_rest = (damage[:, None] * (1 - reset)).sum(0) / (total - count).clamp(min=1)
    expect_mean = torch.where(count > 0, mean_reset, damage.mean())
    both = (count > 0) & (count < total)
    expect_contrast = torch.where(both, mean_reset - mean_rest, torch.zeros_like(mean_reset))
    for rule, expect in (("mean", expect_mean), ("contrast", expect_contrast)):
        s = searches[rule]
        got = (s.unit_significance() if granularity == "neuron" else
               {k: v.flatten() for k, v in s.rule_significance().items()})
        got = torch.cat([got[t.name].double() for t in s.targets])
        assert torch.allclose(got, expect, rtol=1e-5, atol=1e-6), rule


def test_fraction_of_weights_reset_matches_request(mnist, batch):
    model = lenet300()
    search = TicketSearch(model, fraction=0.05, variants=4)
    train_steps(model, mnist.train, 1)
    search.step(*batch)
    masks = independent_masks(model, "weight", 0, 0, range(4), 13).values()
    share = sum(int(m.sum()) for m in masks) / (4 * search.numel)
    assert abs(share - 13 / 256) < 0.002 and search.effective_fraction == 13 / 256


def run_resumable(mnist, rule, granularity, steps, split=None, **options):
    torch.manual_seed(0)
    model = lenet300()
    kw = dict(fraction=0.1, variants=3, rule=rule, granularity=granularity, seed=5, **options)
    search = TicketSearch(model, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for i, (x, y) in enumerate(batches(mnist.train.subset(64 * steps), 64, gen)):
        if i == split:  # stop: checkpoint everything, rebuild from a different init, resume
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "search": search.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf)
            torch.manual_seed(999)
            model = lenet300()
            model.load_state_dict(saved["model"])
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            opt.load_state_dict(saved["opt"])
            search = TicketSearch(model, **kw)
            search.load_state_dict(saved["search"])
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        search.step(x, y)
    return search


@pytest.mark.parametrize("rule,granularity", [("paper", "weight"), ("contrast", "weight"),
                                              ("mean", "neuron")])
def test_resume_is_bit_identical(mnist, rule, granularity):
    whole = run_resumable(mnist, rule, granularity, steps=6)
    resumed = run_resumable(mnist, rule, granularity, steps=6, split=3)
    a, b = whole.rule_significance(), resumed.rule_significance()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [(r.step, r.before, r.after) for r in whole.history] == \
           [(r.step, r.before, r.after) for r in resumed.history]
    assert resumed.step_count == 6 and resumed.totals.searches == whole.totals.searches == 18


def test_resume_keeps_the_proxies_the_kept_examples_and_the_calibrated_scores(mnist):
    """What the default estimator reads resumes exactly too: the proxy sums and how many
    steps fed them (split at step 4: fisher and reset are folded in on steps 0, 3, 6), the
    last ``calibration`` examples (fewer than were seen), and the calibrated scores."""
    kw = dict(calibration=200)
    whole = run_resumable(mnist, "paper", "weight", steps=8, **kw)
    resumed = run_resumable(mnist, "paper", "weight", steps=8, split=4, **kw)
    assert whole.proxies.steps == resumed.proxies.steps == 3
    for a, b in zip(whole.proxies.sums, resumed.proxies.sums):
        assert set(a) == set(b) == {"fisher", "reset", "movement"}
        for k in a:
            assert torch.equal(a[k], b[k]), k
    (xa, ya), (xb, yb) = whole.calibration_batch(), resumed.calibration_batch()
    assert len(ya) == 200 and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(xa, mnist.train.images[:512][
        torch.randperm(512, generator=torch.Generator().manual_seed(0))][-200:])
    a = whole.significance("calibrated", sparsity=0.9)
    b = resumed.significance("calibrated", sparsity=0.9)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.last_calibration.to_dict() == resumed.last_calibration.to_dict()
    for name, keep in whole.last_calibration.keep.items():
        assert torch.equal(keep, resumed.last_calibration.keep[name]), name


def test_load_refuses_other_configuration(batch):
    a = TicketSearch(lenet300(), fraction=0.1, variants=3)
    b = TicketSearch(lenet300(), fraction=0.1, variants=4)
    with pytest.raises(ValueError, match="variants: saved 3 vs here 4"):
        b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("bad", [0, 1, 1.2, -0.5])
def test_fraction_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"fraction must lie strictly between 0 and 1"):
        TicketSearch(lenet300(), fraction=bad, variants=4)


@pytest.mark.parametrize("options,message", [
    (dict(metric="auc"), r"metric must be one of \('loss', 'accuracy'\), got 'auc'"),
    (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*64\) .*got -1"),
    (dict(seed=2 ** 64), r"seed must be an integer in \[0, 2\*\*64\) .*got 18446744073709551616"),
    (dict(seed=1.5), r"seed must be an integer .*got 1.5"),
    (dict(seed=True), r"seed must be an integer .*got True"),
    (dict(calibration=-1), r"calibration must be an integer >= 0 \(examples kept\), got -1"),
    (dict(calibration=100.0), r"calibration must be an integer >= 0 .*got 100.0"),
    (dict(granularity="row"), r"granularity must be one of \('weight', 'neuron'\) .*got 'row'"),
    (dict(rule="best"), r"unknown rule 'best'; choose one of"),
    (dict(reset_to="mean"), r"reset_to must be one of \('init', 'zero'\), got 'mean'"),
    (dict(proxy_decay=0.0), r"proxy decay must lie in \(0, 1\]"),
])
def test_bad_options_are_refused_by_name_and_leave_the_model_alone(options, message):
    model = lenet300()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        TicketSearch(model, **options)
    after = snapshot(model)
    assert all(torch.equal(v, after[0][k]) for k, v in before[0].items())
    assert torch.equal(before[3], after[3])


@pytest.mark.parametrize("bad", [-1, -3, 2.5, True])
def test_variants_not_a_count(bad):
    with pytest.raises(ValueError, match="variants must be an integer >= 0"):
        TicketSearch(lenet300(), fraction=0.1, variants=bad)


def test_model_with_nothing_to_prune():
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(784), nn.ReLU())
    with pytest.raises(ValueError, match="nothing to prune.*include="):
        TicketSearch(model, fraction=0.1, variants=2)
    with pytest.raises(ValueError, match="nothing to prune"):
        TicketSearch(lenet300(), fraction=0.1, variants=2, exclude="fc*")


def test_include_and_exclude_choose_tensors():
    s = TicketSearch(lenet300(), fraction=0.1, variants=2, exclude=["fc3.weight"])
    assert [t.name for t in s.targets] == ["fc1.weight", "fc2.weight"]
    s = TicketSearch(lenet300(), fraction=0.1, variants=2, include=["fc*.bias"])
    assert [t.name for t in s.targets] == ["fc1.bias", "fc2.bias", "fc3.bias"]


def test_non_finite_loss_is_refused_and_nothing_changes(batch):
    model = lenet300()
    search = TicketSearch(model, fraction=0.1, variants=2)
    with torch.no_grad():
        model.fc2.weight[3, 5] = float("nan")
    rng = torch.get_rng_state()
    with pytest.raises(FloatingPointError, match="loss on this batch is nan.*finite baseline"):
        search.step(*batch)
    assert search.step_count == 0 and search.totals.searches == 0 and model.training
    assert torch.equal(rng, torch.get_rng_state())


def test_step_reads_a_replaced_module_and_refuses_a_missing_weight(batch):
    """Targets are looked up by name every step: a module swapped for one of the same
    shape is what the proxies see; a target masked by torch.nn.utils.prune, or gone, is
    an error that says which and what to do."""
    model = lenet300()
    search = TicketSearch(model, fraction=0.1, variants=1, proxy_every=1)
    model.fc2 = nn.Linear(300, 100)
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    search.step(x, y)
    i = [t.name for t in search.targets].index("fc2.weight")
    g, w = model.fc2.weight.grad, model.fc2.weight.detach()
    torch.testing.assert_close(search.proxies.sums[i]["movement"], -g * w)
    torch.nn.utils.prune.random_unstructured(model.fc1, "weight", amount=0.5)
    for ask in (lambda: search.step(x, y), lambda: search.significance("magnitude")):
        with pytest.raises(RuntimeError, match="'fc1.weight' was masked through torch.nn.utils"
                                               ".prune.*after this search was built"):
            ask()
    model.fc1 = nn.Identity()
    with pytest.raises(RuntimeError, match="'fc1.weight' is gone from the model; build a new"):
        search.step(x, y)


def test_a_model_already_masked_by_torch_prune_is_refused_until_made_permanent(batch):
    """A search reads plain parameters; on weights masked through torch.nn.utils.prune
    (weight = weight_orig * weight_mask, as bingo.prune leaves them) it says so and how
    to go on, and once the pruning is made permanent it searches the zeroed weights."""
    model = lenet300()
    torch.nn.utils.prune.l1_unstructured(model.fc1, "weight", amount=0.9)
    torch.nn.utils.prune.l1_unstructured(model.fc3, "weight", amount=0.5)
    with pytest.raises(ValueError, match=r"fc1.weight, fc3.weight are masked through torch.nn."
                                         r"utils.prune.*prune.remove\(module, 'weight'\)"):
        TicketSearch(model)
    for module in (model.fc1, model.fc3):
        torch.nn.utils.prune.remove(module, "weight")
    search = TicketSearch(model, proxy_every=1)
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    search.step(x, y)
    zeroed = model.fc1.weight == 0
    assert zeroed.float().mean() >= 0.9
    assert (search.proxies.sums[0]["movement"][zeroed] == 0).all()


def test_load_refuses_a_format_3_state_that_sampled_movement(batch):
    """Format 3 summed movement every proxy_every-th step; resuming it with every-step
    movement would mix two sums. At proxy_every=1 the two formats mean the same."""
    sampled = TicketSearch(lenet300(), fraction=0.1, variants=2, proxy_every=3).state_dict()
    sampled["format"] = "bingo.TicketSearch/3"
    with pytest.raises(ValueError, match="movement proxy only every proxy_every=3 steps"):
        TicketSearch(lenet300(), fraction=0.1, variants=2, proxy_every=3).load_state_dict(sampled)
    every = TicketSearch(lenet300(), fraction=0.1, variants=2, proxy_every=1)
    with pytest.warns(RuntimeWarning, match="no gradient"):  # a search step, no training
        every.step(*batch)
    state = every.state_dict()
    state["format"] = "bingo.TicketSearch/3"
    del state["config"]["movement"]  # format 3 had no such knob: it always collected it
    twin = TicketSearch(lenet300(), fraction=0.1, variants=2, proxy_every=1)
    twin.load_state_dict(state)
    assert twin.step_count == 1
    state["format"] = "bingo.TicketSearch/2"
    with pytest.raises(ValueError, match="not a TicketSearch state of this version"):
        twin.load_state_dict(state)
