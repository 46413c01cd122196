"""The baselines on small real MNIST subsets: each gives the sparsity it promises, masks
survive training, IMP rewinds, smart-ratio budgets follow the formula; and
``bingo compare`` runs every method and writes its table, plot and JSON."""
import copy
import json

import pytest
import torch
from torch import nn

from bingo import prune
from bingo.engine.targets import select_targets
from bingo.harness.baselines import (
    grasp_scores,
    magnitude_scores,
    random_scores,
    smart_ratio,
    snip_scores,
    synflow_scores,
)
from bingo.harness.baselines.imp import imp, layer_sparsities, schedule
from bingo.harness.cli import main
from bingo.harness.models import convnet, lenet300, paper_mlp
from bingo.harness.training import accuracy, make_optimizer, train


def _sparsity(model):
    zero = total = 0
    for t in select_targets(model):
        w = getattr(model.get_submodule(t.module_name), t.attr)
        zero += int((w == 0).sum())
        total += w.numel()
    return zero / total


def _small(mnist, n=600):
    return mnist.train.subset(n)


@pytest.mark.parametrize("criterion", ["magnitude", "random", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("make", [paper_mlp, convnet])
def test_each_criterion_prunes_exactly_the_promised_sparsity(mnist, criterion, make, fresh_seed):
    torch.manual_seed(fresh_seed % 10_000)
    model = make()
    x, y = mnist.train.images[:128], mnist.train.labels[:128]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = {"magnitude": lambda: magnitude_scores(model),
              "random": lambda: random_scores(model, torch.Generator().manual_seed(fresh_seed)),
              "snip": lambda: snip_scores(model, x, y),
              "grasp": lambda: grasp_scores(model, x, y),
              "synflow": lambda: synflow_scores(model, (1, 28, 28), 0.83, iterations=10)}[criterion]()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    assert all(p.grad is None for p in model.parameters())
    for t in select_targets(model):
        assert scores[t.name].shape == t.shape
    report = prune(model, scores, sparsity=0.83)
    targets = select_targets(model)
    n = sum(t.size for t in targets)
    masks = {t.name: getattr(model.get_submodule(t.module_name), "weight_mask").bool()
             for t in targets}
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.83 * n)
    # the zeros really there: the masked weights, and any kept one that was 0 already
    # (an init draws an exact 0 about once in 2**24 weights)
    already = sum(int((before[name] == 0)[m].sum()) for name, m in masks.items())
    assert _sparsity(model) == report.sparsity == (round(0.83 * n) + already) / n


def test_criteria_differ_from_each_other(mnist):
    torch.manual_seed(0)
    model = paper_mlp()
    x, y = mnist.train.images[:128], mnist.train.labels[:128]
    keeps = {}
    for name, scores in (("magnitude", magnitude_scores(model)), ("snip", snip_scores(model, x, y)),
                         ("grasp", grasp_scores(model, x, y)),
                         ("synflow", synflow_scores(model, (1, 28, 28), 0.9, iterations=10))):
        flat = torch.cat([s.flatten() for s in scores.values()])
        keeps[name] = flat >= flat.kthvalue(int(0.9 * flat.numel())).values
    names = list(keeps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            overlap = (keeps[a] & keeps[b]).sum() / keeps[a].sum()
            assert overlap < 0.95, (a, b)


def test_synflow_iterations_change_the_mask():
    torch.manual_seed(0)
    model = paper_mlp()

    def keep(scores):
        m = copy.deepcopy(model)
        prune(m, scores, sparsity=0.95)
        return torch.cat([m.get_submodule(n).weight_mask.flatten() for n in ("fc1", "fc2", "fc3")])

    one = keep(synflow_scores(model, (1, 28, 28), 0.95, iterations=1))
    many = keep(synflow_scores(model, (1, 28, 28), 0.95, iterations=20))
    assert one.sum() == many.sum()
    assert not torch.equal(one, many)


class _Tokens(nn.Module):
    """Token ids -> embeddings plus position embeddings -> ReLU MLP; with ``one_hot`` the
    same network reading one-hot vectors through a bias-free Linear instead."""

    def __init__(self, vocab=11, width=7, context=5, one_hot=False):
        super().__init__()
        self.one_hot = one_hot
        self.tokens = nn.Linear(vocab, width, bias=False) if one_hot else nn.Embedding(vocab,
                                                                                       width)
        self.positions = nn.Embedding(context, width)
        self.fc, self.head = nn.Linear(width, 6), nn.Linear(6, 3)

    def forward(self, x):
        t = x.shape[1]
        return self.head(torch.relu(self.fc(self.tokens(x) + self.positions(torch.arange(t)))))


def test_synflow_on_token_ids_is_synflow_of_the_all_ones_one_hot(fresh_seed):
    torch.manual_seed(fresh_seed)
    ids_model, one_hot = _Tokens(), _Tokens(one_hot=True)
    one_hot.load_state_dict({**ids_model.state_dict(),
                             "tokens.weight": ids_model.tokens.weight.T.contiguous()})
    ids = torch.randint(0, 11, (2, 5))
    for iterations in (1, 4):
        by_ids = synflow_scores(ids_model, ids, 0.6, iterations=iterations)
        by_ones = synflow_scores(one_hot, (5, 11), 0.6, iterations=iterations,
                                 targets=select_targets(one_hot, exclude="tokens.weight"))
        assert set(by_ids) == set(by_ones) == {"fc.weight", "head.weight"}
        for name in by_ids:
            assert torch.allclose(by_ids[name], by_ones[name], rtol=1e-5, atol=0), name
            assert by_ids[name].isfinite().any() and (by_ids[name] > 0).any()
    with pytest.raises(ValueError, match="no nn.Embedding of the model reads them"):
        synflow_scores(_Shifted(), ids, 0.6, iterations=1)


class _Shifted(_Tokens):
    def forward(self, x):  # its embedding reads a tensor made from the ids, not the ids
        return self.head(self.fc(self.tokens((x + 1) % 11)))


def test_smart_ratio_follows_the_formula_and_adds_up():
    sizes = [235_200, 30_000, 1_000]  # LeNet-300-100
    for s in (0.5, 0.8, 0.95, 0.99):
        keep = smart_ratio(sizes, s)
        kept = sum(k * n for k, n in zip(keep, sizes))
        assert kept == pytest.approx((1 - s) * sum(sizes))
        assert keep[-1] == pytest.approx(0.3)                     # final layer keeps 30%
        assert keep[0] / keep[1] == pytest.approx((9 + 3) / (4 + 2))  # (L-l+1)^2 + (L-l+1)
    keep = smart_ratio([100, 100, 10_000, 100], 0.5)               # clipping at 1
    assert keep[0] == 1.0 and 0 < keep[1] < 1                      # (would be 1.62)
    assert keep[1] / keep[2] == pytest.approx(12 / 6)               # the rest keep the shape
    assert sum(k * n for k, n in zip(keep, [100, 100, 10_000, 100])) == pytest.approx(5150)
    with pytest.raises(ValueError, match="sparsity"):
        smart_ratio(sizes, 1.2)


def test_per_layer_sparsity_prunes_each_layer_to_its_budget():
    torch.manual_seed(0)
    model = lenet300()
    targets = select_targets(model)
    budget = {t.name: 1 - k for t, k in zip(targets, smart_ratio([t.size for t in targets], 0.9))}
    report = prune(model, magnitude_scores(model), sparsity=budget)
    for t in targets:
        assert report.layers[t.name].pruned == round(budget[t.name] * t.size), t.name
    assert report.sparsity == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match="name exactly the scored tensors"):
        prune(lenet300(), magnitude_scores(model), sparsity={"fc1.weight": 0.5})


def test_pruned_weights_stay_zero_through_training(mnist):
    torch.manual_seed(0)
    model = paper_mlp()
    prune(model, magnitude_scores(model), sparsity=0.8)
    zero = {t.name: getattr(model.get_submodule(t.module_name), "weight") == 0
            for t in select_targets(model)}
    for opt in ("adam", "sgd"):
        train(model, _small(mnist), epochs=1, batch_size=64, progress=False,
              optimizer=make_optimizer(opt, model.parameters(), 0.05 if opt == "sgd" else 1e-3))
        for t in select_targets(model):
            w = getattr(model.get_submodule(t.module_name), "weight")
            assert torch.all(w[zero[t.name]] == 0)
            assert (w[~zero[t.name]] != 0).all()


def test_imp_schedule_hits_the_targets_and_rewinds(mnist):
    torch.manual_seed(3)
    model = paper_mlp()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    small = _small(mnist, 300)

    def train_fn(m, after_step=None):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})  # at the round's start
        return train(m, small, epochs=1, batch_size=50, progress=False, after_step=after_step,
                     optimizer=make_optimizer("adam", m.parameters(), 1e-3))

    evaluate = lambda m: {"val_accuracy": accuracy(m, mnist.val.subset(500))}  # noqa: E731
    rounds = imp(model, train_fn, figures=evaluate, sparsities=[0.5, 0.74], rate=0.2,
                 scope="global")
    assert [r.round for r in rounds] == list(range(len(rounds)))
    assert rounds[0].sparsity == 0.0
    assert [round(r.sparsity, 3) for r in rounds[1:]] == [0.2, 0.36, 0.5, 0.59, 0.672, 0.74]
    for r, start in zip(rounds[1:], seen[1:]):  # each retraining starts from rewound weights
        for name in ("fc1", "fc2", "fc3"):
            w0, mask = initial[f"{name}.weight"], start[f"{name}.weight_mask"]
            assert torch.equal(start[f"{name}.weight_orig"][mask == 1], w0[mask == 1])
            assert torch.equal(start[f"{name}.bias"], initial[f"{name}.bias"])
    assert _sparsity(model) == round(0.74 * 109_184) / 109_184  # paper-mlp's weights


def test_imp_stops_at_its_round_budget_and_reports_only_the_sparsities_reached(data_dir,
                                                                               tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs",
                 "1", "--train-limit", "300", "--methods", "imp", "--sparsities", "0.2,0.5",
                 "--imp-scope", "global", "--imp-rounds", "2", "--out", str(out),
                 "--quiet"]) == 0
    (row,) = json.loads((out / "results.json").read_text())["methods"]
    assert [round(r["sparsity"], 3) for r in row["history"]] == [0.0, 0.2, 0.36]
    assert [p["sparsity"] for p in row["points"]] == [0.2]
    assert row["points"][0]["test_accuracy"] == row["history"][1]["test_accuracy"]
    assert "| imp |" in (out / "results.md").read_text()
    with pytest.raises(ValueError, match="max_rounds must be at least 1"):
        imp(paper_mlp(), lambda m, after_step=None: None, figures=lambda m: {},
            sparsities=[0.5], max_rounds=0)


def test_imp_per_layer_prunes_the_output_layer_at_half_rate():
    model = lenet300()
    targets = select_targets(model)
    layers = layer_sparsities(targets, 0.36, 0.2, 0.1)
    r = torch.log(torch.tensor(1 - layers["fc1.weight"])) / torch.log(torch.tensor(0.8))
    assert layers["fc2.weight"] == pytest.approx(layers["fc1.weight"])
    assert layers["fc3.weight"] == pytest.approx(1 - 0.9 ** float(r), abs=1e-6)
    total = sum(layers[t.name] * t.size for t in targets) / sum(t.size for t in targets)
    assert total == pytest.approx(0.36, abs=1e-6)
    assert schedule(0.2, [0.5]) == [0.2, 0.36, 0.5]


def test_imp_stops_when_validation_falls_below_the_floor(mnist):
    torch.manual_seed(0)
    model = paper_mlp()
    small = _small(mnist, 1000)

    def train_fn(m, after_step=None):
        return train(m, small, epochs=2, batch_size=50, progress=False, after_step=after_step,
                     optimizer=make_optimizer("adam", m.parameters(), 1e-3))

    evaluate = lambda m: {"val_accuracy": accuracy(m, mnist.val.subset(500))}  # noqa: E731
    floor = 0.8
    rounds = imp(model, train_fn, figures=evaluate, min_accuracy=floor, rate=0.5,
                 scope="global")
    assert len(rounds) >= 3
    assert rounds[-1].val_accuracy < floor
    assert all(r.val_accuracy >= floor for r in rounds[:-1])
    with pytest.raises(ValueError, match="unreachable accuracy threshold"):
        imp(paper_mlp(), train_fn, figures=evaluate, min_accuracy=0.999)


def test_compare_runs_every_method_and_writes_table_plot_json(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs", "1",
                 "--train-limit", "400", "--sparsities", "0.5,0.8", "--min-accuracy", "0.5",
                 "--out", str(out), "--quiet"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == [
        "bingo", "bingo-gradual", "gmp", "gmp-layer", "gmp-lamp", "imp", "magnitude",
        "wanda", "sparsegpt", "random", "smart-ratio", "hybrid", "snip", "grasp", "synflow"]
    for m in results["methods"]:
        assert [p["sparsity"] for p in m["points"]] == [0.5, 0.8]
        assert all(0.0 <= p["test_accuracy"] <= 1.0 for p in m["points"])
        assert m["seconds"] > 0
    table = (out / "results.md").read_text()
    assert "| bingo |" in table and "× IMP time" in table and "sparsity @ val ≥ 50%" in table
    assert (out / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_rejects_unknown_methods_and_bad_sparsities(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--data-dir", str(data_dir), "--methods", "bingo,lasso",
              "--out", str(tmp_path)])
    assert "unknown methods ['lasso']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--data-dir", str(data_dir), "--sparsities", "0.5,1.5",
              "--out", str(tmp_path)])
    assert "not a fraction" in capsys.readouterr().err
