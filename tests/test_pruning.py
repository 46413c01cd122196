"""One-shot pruning: exact sparsity, the accuracy floor on validation, torch.prune masks."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

import bingo
from bingo.harness.data import batches
from bingo.harness.models import lenet300
from bingo.harness.training import accuracy


@pytest.fixture(scope="module")
def trained(mnist):
    """LeNet-300-100 after one epoch on 6k real MNIST images, with its search scores."""
    torch.manual_seed(0)
    model = lenet300()
    search = bingo.TicketSearch(model, fraction=0.05, variants=2, rule="mean")
    opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    for x, y in batches(mnist.train.subset(6000), 60, torch.Generator().manual_seed(0)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        search.step(x, y)
    return model.state_dict(), search.rule_significance()


def fresh(trained):
    model = lenet300()
    model.load_state_dict(trained[0])
    return model


def magnitude(model):
    """|w| of every Linear weight (the masked weight once a layer is pruned)."""
    return {f"{n}.weight": m.weight.detach().abs() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("sparsity", [0.3, 0.74, 0.95])
def test_global_sparsity_is_exact(trained, sparsity):
    model = fresh(trained)
    report = bingo.prune(model, trained[1], sparsity=sparsity)
    n = sum(s.numel() for s in trained[1].values())
    pruned = sum(int((getattr(model.get_submodule(k.split(".")[0]), "weight_mask") == 0).sum())
                 for k in trained[1])
    assert pruned == round(sparsity * n)
    assert report.sparsity == pytest.approx(pruned / n, abs=0)
    assert torch_prune.is_pruned(model)


def test_global_prunes_the_lowest_scores(trained):
    model = fresh(trained)
    scores = trained[1]
    bingo.prune(model, scores, sparsity=0.5)
    kept = torch.cat([model.get_submodule(k.split(".")[0]).weight_mask.flatten().bool()
                      for k in scores])
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert flat[~kept].max() <= flat[kept].min()


def test_layer_scope_prunes_each_layer_exactly(trained):
    model = fresh(trained)
    report = bingo.prune(model, trained[1], sparsity=0.6, scope="layer")
    for name, layer in report.layers.items():
        assert layer.pruned == round(0.6 * layer.numel), name


def test_min_accuracy_is_respected_on_validation(trained, mnist):
    model = fresh(trained)
    val = lambda m: accuracy(m, mnist.val)
    dense = val(model)
    floor = dense - 0.02
    report = bingo.prune(model, magnitude(model), min_accuracy=floor, evaluate=val)
    assert report.accuracy_before == pytest.approx(dense)
    assert report.accuracy_after >= floor and val(model) == report.accuracy_after
    assert 0.3 < report.sparsity < 1.0  # magnitude pruning can remove a good part of LeNet
    assert len(report.evaluations) <= 12  # bisection, not one evaluation per weight
    failing = [e["sparsity"] for e in report.evaluations if e["accuracy"] < floor]
    assert failing and min(failing) > report.sparsity  # the next step up did cross the floor
    assert min(failing) - report.sparsity <= 2e-3


def test_unreachable_accuracy_threshold(trained, mnist):
    model = fresh(trained)
    with pytest.raises(ValueError, match="unreachable accuracy threshold.*lower min_accuracy"):
        bingo.prune(model, trained[1], min_accuracy=0.999,
                    evaluate=lambda m: accuracy(m, mnist.val))
    assert not torch_prune.is_pruned(model)
    assert torch.equal(model.fc1.weight, trained[0]["fc1.weight"])  # weights restored


def test_masks_survive_prune_remove(trained, mnist):
    model = fresh(trained)
    bingo.prune(model, trained[1], sparsity=0.8)
    masks = {k: model.get_submodule(k.split(".")[0]).weight_mask.clone() for k in trained[1]}
    acc = accuracy(model, mnist.test)
    for k in trained[1]:
        torch_prune.remove(model.get_submodule(k.split(".")[0]), "weight")
    assert not torch_prune.is_pruned(model)
    for k, m in masks.items():
        w = model.get_parameter(k)
        assert isinstance(w, torch.nn.Parameter)
        assert torch.all(w[m == 0] == 0) and torch.all(w[m == 1] != 0)
    assert accuracy(model, mnist.test) == acc


def test_second_prune_keeps_first_masks(trained):
    model = fresh(trained)
    bingo.prune(model, trained[1], sparsity=0.5)
    first = model.fc1.weight_mask.clone()
    report = bingo.prune(model, magnitude(model), sparsity=0.7)
    assert torch.all(model.fc1.weight_mask[first == 0] == 0)
    assert report.sparsity == pytest.approx(0.7, abs=1e-5)


def test_bad_arguments(trained):
    model = fresh(trained)
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        bingo.prune(model, trained[1])
    with pytest.raises(ValueError, match="sparsity must lie in"):
        bingo.prune(model, trained[1], sparsity=1.5)
    with pytest.raises(ValueError, match="needs evaluate="):
        bingo.prune(model, trained[1], min_accuracy=0.9)
    with pytest.raises(ValueError, match="shape"):
        bingo.prune(model, {"fc1.weight": torch.ones(3)}, sparsity=0.5)
    with pytest.raises(KeyError, match="no module"):
        bingo.prune(model, {"conv9.weight": torch.ones(3)}, sparsity=0.5)
    with pytest.raises(ValueError, match="NaN"):
        bingo.prune(model, {"fc3.weight": torch.full((10, 100), float("nan"))}, sparsity=0.5)
    assert not torch_prune.is_pruned(model)


def test_the_report_counts_the_zeros_really_in_the_weights(trained):
    """Kept weights that are exactly 0 count as pruned in ``sparsity`` (``zeros``) but not in
    ``pruned`` (what the mask removed); ``recount`` sees weights changed after the prune."""
    model = fresh(trained)
    scores = {k: v.clone() for k, v in trained[1].items()}
    with torch.no_grad():  # 37 weights of fc2 zeroed and scored highest, so they are kept
        model.fc2.weight.view(-1)[:37] = 0.0
        scores["fc2.weight"].view(-1)[:37] = float(scores["fc2.weight"].max()) + 1.0
    n = sum(s.numel() for s in scores.values())
    report = bingo.prune(model, scores, sparsity=0.5)
    masked = sum(int((model.get_submodule(k.split(".")[0]).weight_mask == 0).sum())
                 for k in scores)
    zeros = sum(int((model.get_submodule(k.split(".")[0]).weight == 0).sum()) for k in scores)
    assert masked == round(0.5 * n) and zeros == masked + 37
    assert report.sparsity == zeros / n
    fc2 = report.layers["fc2.weight"]
    assert (fc2.pruned, fc2.zeros, fc2.sparsity) == (
        int((model.fc2.weight_mask == 0).sum()), int((model.fc2.weight_mask == 0).sum()) + 37,
        (int((model.fc2.weight_mask == 0).sum()) + 37) / 30_000)
    with torch.no_grad():  # a kept fc3 weight set to 0 after the prune
        kept = model.fc3.weight_mask.view(-1).nonzero()[0]
        model.fc3.weight_orig.view(-1)[kept] = 0.0
    assert report.recount(model).sparsity == (zeros + 1) / n
    assert report.layers["fc3.weight"].zeros == report.layers["fc3.weight"].pruned + 1


def test_layer_scope_bisects_one_sparsity_for_every_layer(trained, mnist):
    """scope="layer" with a floor: the bisection moves one sparsity that every layer is
    pruned to (round(s * numel) each), and the floor holds on validation."""
    model = fresh(trained)
    val = lambda m: accuracy(m, mnist.val.subset(2000))  # noqa: E731
    floor = val(model) - 0.03
    report = bingo.prune(model, magnitude(model), min_accuracy=floor, evaluate=val,
                         scope="layer", tolerance=0.01)
    s = max(e["sparsity"] for e in report.evaluations if e["accuracy"] >= floor)
    assert 0.3 < s < 1.0 and report.accuracy_after >= floor
    for name, layer in report.layers.items():
        assert layer.pruned == round(s * layer.numel), name
    assert min(e["sparsity"] for e in report.evaluations if e["accuracy"] < floor) - s <= 0.01


def test_an_unknown_scope_is_refused_before_anything_is_pruned(trained):
    model = fresh(trained)
    with pytest.raises(ValueError, match=r"scope must be one of \('global', 'layer'\), got 'row'"):
        bingo.prune(model, trained[1], sparsity=0.5, scope="row")
    with pytest.raises(ValueError, match="scope must be one of"):
        bingo.prune(model, trained[1], min_accuracy=0.5, evaluate=lambda m: 1.0, scope="unit")
    assert not torch_prune.is_pruned(model)
