"""Gradual pruning inside a fine-tune (bingo.pruning.gradual): the cubic schedule, masks that only
grow, smallest kept weights first, the budgets reached, and its use by `bingo compare`."""
import copy
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from bingo.harness.cli import main
from bingo.harness.models import paper_mlp
from bingo.harness.training import accuracy, make_optimizer, train
from bingo.pruning.gradual import GradualPruning, ramp_from_scores
from bingo.pruning.masks import prune


def _pruned(module: nn.Module) -> int:
    return int((module.weight_mask == 0).sum())


def test_ramp_follows_the_cubic_schedule_and_prunes_the_smallest_kept_weights(fresh_seed):
    torch.manual_seed(fresh_seed)
    model = nn.Sequential(nn.Linear(37, 29), nn.ReLU(), nn.Linear(29, 11))
    torch_prune.random_unstructured(model[0], "weight", amount=0.2)  # a start of its own
    budgets = {"0.weight": 0.83, "2.weight": 0.61}
    steps, every = 23, 4
    ramp = GradualPruning(model, budgets, steps=steps, every=every)
    layers = {"0.weight": model[0], "2.weight": model[2]}
    start = {n: _pruned(m) for n, m in layers.items()}
    assert start["0.weight"] == round(0.2 * 37 * 29) and start["2.weight"] == 0
    goal = {n: round(budgets[n] * m.weight.numel()) for n, m in layers.items()}
    for i in range(steps + 9):
        with torch.no_grad():  # what training would do between two calls
            for m in layers.values():
                m.weight_orig.add_(0.05 * torch.randn_like(m.weight_orig))
        before = {n: m.weight_mask.clone() for n, m in layers.items()}
        ramp()
        for n, m in layers.items():
            mask = m.weight_mask
            assert not (mask.bool() & ~before[n].bool()).any(), "a pruned weight came back"
            if i <= steps and (i % every == 0 or i == steps):
                f = 1 - (1 - i / steps) ** 3
                assert _pruned(m) == round(start[n] + (goal[n] - start[n]) * f)
                assert torch.equal(m.weight, m.weight_orig * mask)  # before any forward
            else:
                assert torch.equal(mask, before[n])
            newly = before[n].bool() & ~mask.bool()
            if newly.any():
                size = m.weight_orig.abs()
                assert size[newly].max() <= size[mask.bool()].min()
    assert {n: _pruned(m) for n, m in layers.items()} == goal
    ramp.finish()
    assert {n: _pruned(m) for n, m in layers.items()} == goal


def test_finish_reaches_the_budgets_when_training_stops_early(fresh_seed):
    torch.manual_seed(fresh_seed)
    model = nn.Sequential(nn.Conv2d(3, 7, 3), nn.Tanh(), nn.Flatten(), nn.Linear(7 * 9, 5))
    ramp = GradualPruning(model, {"0.weight": 0.9, "3.weight": 0.35}, steps=50)
    for _ in range(11):
        ramp()
    assert _pruned(model[0]) < round(0.9 * 7 * 3 * 3 * 3)
    ramp.finish()
    assert (_pruned(model[0]), _pruned(model[3])) == (round(0.9 * 7 * 27), round(0.35 * 5 * 63))
    assert model(torch.randn(2, 3, 5, 5)).shape == (2, 5)
    assert torch.equal(model[0].weight, model[0].weight_orig * model[0].weight_mask)
    assert not hasattr(model[0], "bias_mask")


def test_ramp_refuses_budgets_it_cannot_reach_with_the_fix():
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match=r"already 50.00% pruned.*masks only grow"):
        GradualPruning(model, {"0.weight": 0.3}, steps=10)
    with pytest.raises(ValueError, match=r"sparsity in \[0, 1\]"):
        GradualPruning(model, {"2.weight": 1.5}, steps=10)
    with pytest.raises(KeyError, match="no module 'fc9'"):
        GradualPruning(model, {"fc9.weight": 0.5}, steps=10)
    with pytest.raises(KeyError, match="no such parameter"):
        GradualPruning(model, {"2.weight": 0.5, "2.scale": 0.5}, steps=10)
    assert not hasattr(model[2], "weight_mask"), "a refused ramp changed the model"
    with pytest.raises(ValueError, match="steps and every must be >= 1"):
        GradualPruning(model, {"2.weight": 0.5}, steps=0)
    with pytest.raises(ValueError, match="budgets is empty"):
        GradualPruning(model, {}, steps=10)
    scores = {"2.weight": torch.rand(3, 8)}
    with pytest.raises(ValueError, match="density 1.0 must exceed 1"):
        ramp_from_scores(model, scores, 0.5, 1.0, steps=10)


def test_a_ramp_from_scores_starts_at_the_methods_mask_and_ends_at_its_budgets(mnist):
    torch.manual_seed(0)
    model = paper_mlp()
    split = mnist.train.subset(3000)
    train(model, split, epochs=1, batch_size=50, progress=False,
          optimizer=make_optimizer("adam", model.parameters(), 1e-3))
    scores = {n: p.detach().abs() * (1 + torch.rand_like(p)) for n, p in model.named_parameters()
              if n.endswith("weight")}  # a ranking of its own, not magnitude
    start, goal = copy.deepcopy(model), copy.deepcopy(model)
    prune(start, scores, sparsity=1 - 4 * (1 - 0.93))
    goal_report = prune(goal, scores, sparsity=0.93)

    ramped = copy.deepcopy(model)
    ramp = ramp_from_scores(ramped, scores, 0.93, density=4, steps=25)
    masks = {f"{n}.weight": m.weight_mask.clone() for n, m in ramped.named_modules()
             if hasattr(m, "weight_mask")}
    assert masks.keys() == goal_report.layers.keys()
    assert all(torch.equal(masks[f"{n}.weight"], m.weight_mask) for n, m in start.named_modules()
               if hasattr(m, "weight_mask"))
    train(ramped, split.subset(2000), epochs=1, batch_size=50, progress=False, after_step=ramp,
          optimizer=make_optimizer("adam", ramped.parameters(), 1e-3))
    ramp.finish()
    for name, layer in goal_report.layers.items():
        module = ramped.get_submodule(name.rpartition(".")[0])
        assert _pruned(module) == layer.pruned
        assert not (module.weight_mask.bool() & ~masks[name].bool()).any()
        assert (module.weight[module.weight_mask == 0] == 0).all()
    one_shot = accuracy(goal, mnist.test)
    assert accuracy(ramped, mnist.test) > max(0.8, one_shot + 0.02)


def test_compare_fine_tunes_with_a_ramp_and_names_it(data_dir, tmp_path, capsys):
    out = tmp_path / "ramp"
    code = main(["compare", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs", "1",
                 "--train-limit", "400", "--methods", "magnitude", "--sparsities", "0.9",
                 "--finetune-epochs", "1", "--finetune-ramp", "4", "--out", str(out), "--quiet"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert "_ft1_ramp4.0_" in results["name"]
    assert [p["sparsity"] for p in results["methods"][0]["points"]] == [0.9]
    from bingo.harness.compare import CompareJob
    assert CompareJob(finetune_epochs=1).finetune_ramp == 4.0  # the default way to fine-tune
    assert CompareJob(finetune_epochs=1, finetune_ramp=0).finetune_ramp == 0  # one shot, asked
    assert CompareJob(finetune_epochs=1, refit=True).finetune_ramp == 0.0
    assert CompareJob().finetune_ramp == 0.0
    for bad in (["--finetune-ramp", "0.5", "--finetune-epochs", "1"], ["--finetune-ramp", "4"]):
        code = main(["compare", "--data-dir", str(data_dir), "--methods", "magnitude",
                     "--sparsities", "0.9", *bad, "--out", str(tmp_path / "bad"), "--quiet"])
        assert code == 2
        assert "finetune_ramp" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_tracked_ramp_zeroes_the_pruned_first_moments_and_changes_nothing_else(
        mnist, optimizer, fresh_seed):
    split = mnist.train.subset(1500)
    runs = []
    for tracked in (True, False):
        torch.manual_seed(fresh_seed)
        model = paper_mlp()
        ramp = GradualPruning(model, {"fc1.weight": 0.9, "fc2.weight": 0.6}, steps=15, every=3)
        opt = make_optimizer(optimizer, model.parameters(),
                             1e-3 if optimizer == "adam" else 0.05)
        # the ramp itself as the hook is tracked by the loop; a wrapper is not
        hook = ramp if tracked else (lambda x, y: ramp(x, y))
        train(model, split, epochs=1, batch_size=64, optimizer=opt, after_step=hook,
              progress=False)
        assert (ramp.optimizer is opt) == tracked
        runs.append((model, opt))
    (model, opt), (other, other_opt) = runs
    key = "exp_avg" if optimizer == "adam" else "momentum_buffer"
    stale = 0
    for name in ("fc1", "fc2"):
        mine, theirs = model.get_submodule(name), other.get_submodule(name)
        assert torch.equal(mine.weight_mask, theirs.weight_mask)
        assert torch.equal(mine.weight, theirs.weight)  # the same run, bit for bit
        pruned = mine.weight_mask == 0
        assert pruned.any()
        assert (opt.state[mine.weight_orig][key][pruned] == 0).all()
        stale += int((other_opt.state[theirs.weight_orig][key][pruned] != 0).sum())
    assert stale > 0
    with pytest.raises(ValueError, match="does not hold the pruned weights"):
        ramp.track(torch.optim.SGD(paper_mlp().parameters(), lr=0.1))
