"""The rankings a gradual event chooses between (bingo.evidence.candidates and the
pruner's use of them): the mixtures' stable ranks, which proxies the search folds in for
them, the weights no kept example reaches (free to prune), and LAMP, each checked against
a by-hand computation on real MNIST runs or fresh random tensors."""
import numpy as np
import pytest
import torch

from bingo.harness.models import paper_mlp
from bingo.pruning.gradual_ticket import GradualTicketPruning
from tests.gradual_runs import independent_loss, total_steps, train_with


def test_the_mixture_ranks_are_a_stable_sort_s_with_ties(fresh_seed):
    from bingo.evidence.candidates import stable_ranks
    g = torch.Generator().manual_seed(fresh_seed)
    ties = torch.randint(-4, 5, (5000,), generator=g).float()  # movement sums are often 0
    ties[torch.randperm(5000, generator=g)[:300]] = -0.0  # equal to 0.0, as in a sort
    spread = torch.randn(3001, generator=g) * torch.logspace(-30, 30, 3001)
    spread[::7] = -spread[::7].abs()
    for values in (ties, spread):
        expected = torch.empty_like(values)
        expected[torch.sort(values, stable=True).indices] = torch.arange(
            float(values.numel()))
        assert torch.equal(stable_ranks(values), expected)
    with pytest.raises(ValueError, match="flat tensor"):
        stable_ranks(ties.view(50, 100))


def test_fisher_and_reset_are_folded_in_only_when_a_candidate_reads_them():
    from bingo.engine.proxies import DEFAULT_PROXY_EVERY
    default = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100)
    assert default.search.proxy_every == 101  # the first step only
    fisher = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100,
                                  candidates=("magnitude", "mag+fisher"))
    assert fisher.search.proxy_every == DEFAULT_PROXY_EVERY
    asked = GradualTicketPruning(paper_mlp(), sparsity=0.9, total_steps=100, proxy_every=2)
    assert asked.search.proxy_every == 2


def _dead_columns(model, inputs):
    """Per Linear weight name: the input features that are zero on every one of ``inputs``
    in the model as masked now, found by running its layers one by one."""
    dead, x = {}, inputs
    with torch.no_grad():
        for name, layer in model.named_children():
            if isinstance(layer, torch.nn.Linear):
                dead[f"{name}.weight"] = (x.reshape(-1, x.shape[-1]) != 0).sum(0) == 0
            x = layer(x)
    return dead


def test_free_dead_prunes_weights_no_kept_example_reaches_first_and_for_free(mnist,
                                                                            fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=total_steps(mnist), every=5,
                                  calibration=512, seed=fresh_seed % 1000, free_dead=True)
    train_with(model, mnist, pruner, seed=fresh_seed)
    # a unit of the first hidden layer made dead on every kept example: its outgoing
    # weights (a column of the second Linear) are free; the unit with the most kept
    # outgoing weights, so that the column is not already pruned under this seed
    unit = int(pruner.keep()["fc2.weight"].sum(0).argmax())
    with torch.no_grad():
        model.fc1.weight_orig[unit] = 0.0
        model.fc1.bias[unit] = -1.0
    inputs, labels = pruner.search.calibration_batch()
    model.eval()
    dead = _dead_columns(model, inputs)
    model.train()
    before = pruner.keep()
    free = {n: before[n] & dead[n].view(1, -1).expand_as(before[n]) for n in before}
    count = sum(int(f.sum()) for f in free.values())
    assert dead["fc2.weight"][unit] and count > 0
    kept_now = sum(int(k.sum()) for k in before.values())
    total = sum(k.numel() for k in before.values())
    masks = pruner.choose(1 - (kept_now - count - 10) / total)  # 10 weights beyond the free
    assert pruner.note()["free"] == count
    assert all(not (masks[n] & free[n]).any() for n in masks)  # every free weight went
    # and cost nothing: restoring them changes no kept example's loss
    restored = {n: masks[n] | free[n] for n in masks}
    assert independent_loss(model, restored, inputs, labels) == pytest.approx(
        independent_loss(model, masks, inputs, labels), rel=1e-6)
    # without the option, magnitude alone keeps some of them at this sparsity
    pruner.free_dead = False
    plain = pruner.choose(1 - (kept_now - count - 10) / total)
    assert any((plain[n] & free[n]).any() for n in plain)


def _lamp_by_hand(w):
    """LAMP worked out with numpy: w_u^2 over the sum of w_v^2 of the weights v >= u in a
    stable ascending order of w^2."""
    sq = w.astype(np.float64).ravel() ** 2
    order = np.argsort(sq.astype(np.float32), kind="stable")
    out = np.zeros_like(sq)
    for place, u in enumerate(order):
        out[u] = sq[u] / sq[order[place:]].sum() if sq[u] else 0.0
    return out.reshape(w.shape)


def test_lamp_scores_are_each_weight_s_square_over_the_larger_ones_s(fresh_seed):
    from bingo.evidence.candidates import lamp_scores
    g = torch.Generator().manual_seed(fresh_seed)
    w = torch.randn(37, 23, generator=g) * torch.rand(37, 1, generator=g)
    w[torch.rand(37, 23, generator=g) < 0.3] = 0.0  # pruned entries
    w[0, :5] = w[1, 7]  # ties
    got = lamp_scores(w)
    assert got.dtype == torch.float64 and got.shape == w.shape
    np.testing.assert_allclose(got.numpy(), _lamp_by_hand(w.numpy()), rtol=1e-12, atol=0)
    assert float(got.max()) == 1.0 and bool((got[w == 0] == 0).all())


def test_a_lamp_event_cuts_lamp_s_global_ranking_and_empties_no_layer(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=total_steps(mnist), every=5,
                                  candidates=("magnitude", "lamp"), calibration=256,
                                  seed=fresh_seed % 1000)
    train_with(model, mnist, pruner, seed=fresh_seed)
    assert set(pruner.chosen) == {"magnitude", "lamp"}
    assert sum(pruner.chosen.values()) == len(pruner.schedule.events()) - 1
    before = pruner.keep()
    w = {n: (model.get_submodule(n.rsplit(".", 1)[0]).weight_orig * before[n]).detach()
         for n in before}
    pruner.candidates = ("lamp",)  # lamp's own proposal at each sparsity
    for sparsity in (0.95, 0.9995):
        masks = pruner.choose(sparsity)
        # by hand: LAMP of each layer's kept weights, the pruned first, then the lowest
        # scores over every layer at once, ties by index
        scores = np.concatenate([_lamp_by_hand(w[n].numpy()).ravel() for n in before])
        kept = np.concatenate([before[n].numpy().ravel() for n in before])
        goal = round(sparsity * kept.size)
        order = np.lexsort((np.arange(kept.size), scores.astype(np.float32),
                            kept.astype(int)))
        expect = np.ones(kept.size, dtype=bool)
        expect[order[:goal]] = False
        got = np.concatenate([masks[n].numpy().ravel() for n in before])
        assert (got == expect).all()
        # every layer keeps its largest weight, however high the sparsity
        assert all(bool(masks[n].any()) for n in before)
