"""Pruning during training (bingo.pruning.schedule, bingo.harness.baselines.gmp): the cubic schedule's
events against hand-computed values, masks that only grow and prune exact counts, and
gradual magnitude pruning on real MNIST holding its pruned weights at zero to the end."""
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.harness.models import paper_mlp
from bingo.harness.training import make_optimizer, steps_per_epoch, train
from bingo.evidence.candidates import lowest
from bingo.pruning.gradual_ticket import GradualTicketPruning
from bingo.pruning.schedule import CubicSchedule, lowest_first, prune_kept


def test_the_cubic_schedule_hits_zhu_and_gupta_values():
    s = CubicSchedule(0.8, 1000, start=0.1, end=0.75, every=50)
    assert (s.first, s.last) == (100, 750)
    assert s.events() == list(range(100, 751, 50))
    assert s.at(100) == 0.0 and s.at(750) == pytest.approx(0.8)
    assert s.at(425) is None  # half way, between two events
    assert CubicSchedule(0.8, 1000, every=25).at(425) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert s.at(150) == pytest.approx(0.8 * (1 - (1 - 50 / 650) ** 3))
    for off in (99, 101, 149, 751, 800):
        assert s.at(off) is None
    odd = CubicSchedule(0.5, 97, start=0.0, end=0.9, every=20)  # the last event off the grid
    assert odd.events() == [0, 20, 40, 60, 80, 87] and odd.at(87) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sparsity=1.0, total_steps=10), "not a fraction"),
    (dict(sparsity=0.5, total_steps=0), "total_steps must be an integer >= 1"),
    (dict(sparsity=0.5, total_steps=10, start=0.8, end=0.5), "0 <= start < end <= 1"),
    (dict(sparsity=0.5, total_steps=10, every=0), "every must be an integer >= 1"),
    (dict(sparsity=0.5, total_steps=2, start=0.1, end=0.2), "no room"),
])
def test_bad_schedules_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CubicSchedule(**kwargs)


def test_lowest_first_prunes_the_pruned_first_then_the_lowest_kept_ties_by_index():
    scores = {"a": torch.tensor([[5.0, 1.0, 3.0], [1.0, 9.0, 0.5]]), "b": torch.tensor([2.0, 1.0])}
    keep = {"a": torch.tensor([[True, True, True], [True, False, True]]),
            "b": torch.tensor([True, True])}
    # 8 weights, 4 pruned: a[1,1] (already, though its score is 9), then 0.5, then the
    # tie at 1.0 between a[0,1], a[1,0] and b[1] broken by index: a[0,1], a[1,0]
    out = lowest_first(scores, keep, 0.5)
    assert out["a"].tolist() == [[True, False, True], [False, False, False]]
    assert out["b"].tolist() == [True, True]
    per_layer = lowest_first(scores, keep, 0.5, scope="layer")  # 3 of a, 1 of b
    assert per_layer["a"].tolist() == [[True, False, True], [True, False, False]]
    assert per_layer["b"].tolist() == [True, False]
    assert prune_kept(torch.arange(4.0), torch.tensor([False, False, True, True]), 1).tolist() \
        == [False, False, True, True]  # already more pruned than asked: unchanged
    with pytest.raises(ValueError, match="scope must be one of"):
        lowest_first(scores, keep, 0.5, scope="blocks")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lowest_cuts_what_a_stable_sort_cuts(dtype, fresh_seed):
    """``lowest`` (kthvalue, ties by index) prunes exactly a stable sort's first k, ties
    and -0.0 included; float64 values that differ below float32's precision keep their
    order (the calibrated estimator's budget scores are float64)."""
    gen = torch.Generator().manual_seed(fresh_seed)
    values = torch.randint(-20, 20, (3001,), generator=gen).to(dtype) / 7  # many ties
    values[::97] = -0.0
    if dtype == torch.float64:  # neighbours 1e-12 apart: one float32, two float64 values
        values[1::5] = values[::5][:len(values[1::5])] + 1e-12
    for k in (0, 1, 17, 1500, 3000, 3001, 5000):
        expected = torch.zeros(len(values), dtype=torch.bool)
        expected[torch.sort(values, stable=True).indices[:k]] = True
        assert torch.equal(lowest(values, k), expected), k


def _run(model, mnist, pruner, epochs=1, limit=3000):
    split = mnist.train.subset(limit)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    masks = []

    def hook(x, y):
        if pruner.step(x, y) is not None:
            masks.append({n: k.clone() for n, k in pruner.keep().items()})
    train(model, split, epochs=epochs, batch_size=64, optimizer=opt, after_step=hook,
          progress=False)
    return masks


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gradual_magnitude_prunes_on_schedule_and_its_zeros_stay_to_the_end(mnist, scope,
                                                                              fresh_seed):
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    total = steps_per_epoch(mnist.train.subset(3000), 64)
    pruner = GradualMagnitudePruning(model, sparsity=0.9, total_steps=total, every=5,
                                     scope=scope)
    masks = _run(model, mnist, pruner)
    assert len(masks) == len(pruner.schedule.events()) == len(pruner.events)
    numel = sum(m.numel() for m in masks[0].values())
    for event, mask in zip(pruner.events, masks):  # exact counts at every event
        pruned = {n: int((~k).sum()) for n, k in mask.items()}
        if scope == "global":
            assert sum(pruned.values()) == round(event["sparsity"] * numel)
        else:
            assert pruned == {n: round(event["sparsity"] * k.numel()) for n, k in mask.items()}
    for before, after in zip(masks, masks[1:]):
        assert all(not (after[n] & ~before[n]).any() for n in before), "a weight came back"
    report = pruner.finish()
    weights = {n: getattr(model.get_submodule(n.rsplit(".", 1)[0]), "weight") for n in masks[0]}
    for n, k in masks[-1].items():  # every weight pruned at any event is still exactly 0
        assert (weights[n][~k] == 0).all()
        assert torch_prune.is_pruned(model)
    assert report.sparsity == sum(int((w == 0).sum()) for w in weights.values()) / numel
    if scope == "layer":
        assert all(x.pruned == round(0.9 * x.numel) for x in report.layers.values())
    else:  # one ranking: the last layer keeps a larger share than the first
        assert sum(x.pruned for x in report.layers.values()) == round(0.9 * numel)
        assert report.layers["fc3.weight"].pruned / 640 < report.layers["fc1.weight"].pruned / 100352
    # the last event pruned the smallest kept weights (the event runs after the step)
    assert pruner.events[-1]["step"] == pruner.schedule.last


def test_gradual_magnitude_refuses_a_bad_scope():
    with pytest.raises(ValueError, match="scope must be one of"):
        GradualMagnitudePruning(nn.Linear(3, 2), sparsity=0.5, total_steps=100, scope="neuron")


def test_the_kthvalue_cut_equals_a_stable_sort_with_many_ties(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    for _ in range(200):
        n = int(torch.randint(1, 80, (1,), generator=g))
        scores = torch.randint(0, 5, (n,), generator=g).float()  # ties everywhere
        keep = torch.rand(n, generator=g) < 0.7
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        ranked = torch.where(keep, scores.double(), torch.tensor(-torch.inf, dtype=torch.float64))
        expected = torch.ones(n, dtype=torch.bool)
        expected[torch.sort(ranked, stable=True).indices[:k]] = False
        if k < n - int(keep.sum()):
            expected = keep
        assert torch.equal(prune_kept(scores, keep, k), expected)


class _Attention(nn.Module):
    """An encoder layer whose attention reads ``out_proj.weight`` by attribute."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.layer(self.inp(x)).mean(1))


@pytest.mark.parametrize("method", ["gmp", "bingo-gradual"])
def test_attention_weights_read_by_attribute_follow_their_masks(method, fresh_seed):
    from bingo.pruning.gradual_ticket import GradualTicketPruning
    torch.manual_seed(fresh_seed)
    model = _Attention()
    g = torch.Generator().manual_seed(fresh_seed)
    x, y = torch.randn(64, 5, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    cls = GradualMagnitudePruning if method == "gmp" else GradualTicketPruning
    hook = cls(model, sparsity=0.7, total_steps=30, start=0.0, end=0.5, every=3)
    assert "layer.self_attn.out_proj.weight" in hook.names
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(30):  # a stale out_proj.weight fails here: backward through a freed graph
        batch = slice(step % 4 * 16, step % 4 * 16 + 16)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
        hook.step(x[batch], y[batch])
    assert hook.finish().sparsity == pytest.approx(0.7, abs=1e-3)
    out_proj = model.layer.self_attn.out_proj
    assert out_proj.weight_orig.grad.abs().sum() > 0  # trained through its mask
    state = model.state_dict()  # the masks made permanent, in a model without hooks
    permanent = _Attention()
    permanent.load_state_dict({
        k.removesuffix("_orig"): v * state[k.removesuffix("_orig") + "_mask"]
        if k.endswith("_orig") else v for k, v in state.items() if not k.endswith("_mask")})
    model.eval(), permanent.eval()
    with torch.no_grad():  # eval under no_grad takes the encoder layer's fast path
        assert torch.allclose(model(x), permanent(x), atol=1e-6)
        assert (out_proj.weight == 0).float().mean() > 0.3


def test_one_shot_masks_on_attention_follow_training_and_copies(fresh_seed):
    from bingo import prune
    from bingo.harness.baselines.scores import magnitude_scores
    from bingo.pruning.masks import copy_model
    torch.manual_seed(fresh_seed)
    model = _Attention()
    x = torch.randn(16, 5, 6, generator=torch.Generator().manual_seed(fresh_seed))
    prune(model, magnitude_scores(model), sparsity=0.5)
    out_proj = model.layer.self_attn.out_proj
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):  # a fine-tune after one-shot pruning
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert out_proj.weight_orig.grad.abs().sum() > 0
    twin = copy_model(model)
    with torch.no_grad():
        twin.layer.self_attn.out_proj.weight_orig.add_(1.0)
        twin(x), model(x)
    mine = twin.layer.self_attn.out_proj
    assert torch.equal(mine.weight, mine.weight_orig * mine.weight_mask)  # its own weights
    assert torch.equal(out_proj.weight, out_proj.weight_orig * out_proj.weight_mask)


def _tracked_run(mnist, seed, kind, optimizer, tracked):
    torch.manual_seed(seed)
    model = paper_mlp()
    split = mnist.train.subset(2000)
    total = steps_per_epoch(split, 64)
    if kind == "gmp":
        pruner = GradualMagnitudePruning(model, sparsity=0.9, total_steps=total, every=4)
    else:
        pruner = GradualTicketPruning(model, sparsity=0.9, total_steps=total, every=4,
                                      calibration=128)
    opt = make_optimizer(optimizer, model.parameters(), 1e-3 if optimizer == "adam" else 0.05)
    # the pruner itself as the hook is tracked by the loop; a wrapper is not
    hook = pruner if tracked else (lambda x, y: pruner.step(x, y))
    train(model, split, epochs=1, batch_size=64, optimizer=opt, after_step=hook,
          progress=False)
    assert (pruner.optimizer is opt) == tracked
    return model, pruner, opt


@pytest.mark.parametrize("kind,optimizer", [("gmp", "adam"), ("gmp", "sgd"),
                                            ("bingo-gradual", "adam")])
def test_pruned_weights_first_moments_are_zeroed_and_the_run_is_unchanged(mnist, kind,
                                                                          optimizer, fresh_seed):
    model, pruner, opt = _tracked_run(mnist, fresh_seed, kind, optimizer, tracked=True)
    other, other_pruner, other_opt = _tracked_run(mnist, fresh_seed, kind, optimizer,
                                                  tracked=False)
    key = "exp_avg" if optimizer == "adam" else "momentum_buffer"
    keep, other_keep = pruner.keep(), other_pruner.keep()
    stale = 0
    for name, (module, attr) in pruner._modules.items():
        assert torch.equal(keep[name], other_keep[name])  # the same masks
        assert torch.equal(pruner.weights()[name], other_pruner.weights()[name])  # weights
        pruned = ~keep[name]
        assert pruned.any()
        state = opt.state[getattr(module, attr + "_orig")]
        assert (state[key][pruned] == 0).all()
        assert (state[key][keep[name]] != 0).any()
        if optimizer == "adam":  # the second moment is left: its update is then 0
            assert (state["exp_avg_sq"][pruned] != 0).any()
        other_module, _ = other_pruner._modules[name]
        stale += int((other_opt.state[getattr(other_module, attr + "_orig")][key][pruned]
                      != 0).sum())
    assert stale > 0  # untracked, the pruned weights' state lingers (and decays to denormals)


def test_tracking_an_optimizer_without_the_pruned_weights_is_refused():
    model = paper_mlp()
    pruner = GradualMagnitudePruning(model, sparsity=0.5, total_steps=100)
    with pytest.raises(ValueError, match="does not hold the pruned weights.*weight_orig"):
        pruner.track(torch.optim.SGD(paper_mlp().parameters(), lr=0.1))
