"""ResNet-20 on real CIFAR-10 through ``bingo compare`` and ``bingo prune`` (a few steps:
the wiring, not the accuracy), the training options CIFAR runs need, and the model /
dataset pairing refused by name."""
import json
import math

import pytest
import torch

from bingo.harness.cli import main
from bingo.harness.data import Split
from bingo.harness.models import paper_mlp
from bingo.harness.training import lr_factor, make_optimizer, train

CIFAR = ["--dataset", "cifar10", "--train-limit", "192", "--epochs", "1", "--batch-size", "64",
         "--optimizer", "sgd", "--lr", "0.05", "--weight-decay", "1e-4",
         "--lr-schedule", "cosine", "--quiet"]
MODELS = pytest.mark.parametrize("model", ["resnet20", "vgg11-w16"])


@MODELS
def test_compare_runs_cifar_nets_and_reports_the_exact_test_images(data_dir, tmp_path, model):
    out = tmp_path / "c"
    assert main(["compare", "--data-dir", str(data_dir), "--model", model, *CIFAR,
                 "--methods", "gmp",
                 "--sparsities", "0.9", "--gmp-every", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["weight_decay"] == 1e-4
    assert results["config"]["lr_schedule"] == "cosine"
    ((point,),) = [row["points"] for row in results["methods"]]
    assert abs(point["zeros"] - 0.9) < 1e-4
    assert 0.0 <= point["test_exact_accuracy"] <= 1.0 and 0.0 <= point["test_accuracy"] <= 1.0


@MODELS
def test_prune_runs_cifar_nets_gradually(data_dir, tmp_path, model):
    out = tmp_path / "p.json"
    assert main(["prune", "--data-dir", str(data_dir), "--model", model, *CIFAR,
                 "--schedule", "gradual",
                 "--sparsity", "0.8", "--gmp-every", "1", "--calibration", "64",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert abs(result["sparsity"] - 0.8) < 1e-4 and "pruned_exact_accuracy" in result
    assert result["train_steps"] == 3


@pytest.mark.parametrize("model, dataset, hint", [
    ("lenet300", "cifar10", "reads mnist inputs, not cifar10: pass --dataset mnist"),
    ("resnet20", "mnist", "reads cifar10 inputs, not mnist: pass --dataset cifar10"),
    ("vgg11-w16", "mnist", "reads cifar10 inputs, not mnist: pass --dataset cifar10"),
    ("char-gpt", "mnist", "reads tinyshakespeare inputs, not mnist: pass --dataset "
                          "tinyshakespeare"),
])
def test_a_model_that_cannot_read_the_dataset_is_refused_before_training(
        data_dir, tmp_path, capsys, model, dataset, hint):
    assert main(["compare", "--data-dir", str(data_dir), "--model", model, "--dataset", dataset,
                 "--methods", "gmp", "--sparsities", "0.9", "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    assert hint in capsys.readouterr().err


def test_cosine_schedule_and_weight_decay_reach_the_optimizer(fresh_seed):
    f = lr_factor("cosine", 10)
    assert f(0) == 1.0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert lr_factor("constant", 10)(7) == 1.0
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        lr_factor("step", 10)
    g = torch.Generator().manual_seed(fresh_seed)
    split = Split(torch.randn(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g))
    torch.manual_seed(fresh_seed)
    model = paper_mlp()
    opt = make_optimizer("sgd", model.parameters(), 0.1, weight_decay=1e-3)
    seen = []
    train(model, split, epochs=2, batch_size=8, optimizer=opt, seed=fresh_seed,
          after_step=lambda x, y: seen.append(opt.param_groups[0]["lr"]), progress=False,
          lr_schedule="cosine")
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(1, 11)]
    assert seen == pytest.approx(expected)  # stepped after every optimizer step, to 0
    assert opt.param_groups[0]["weight_decay"] == 1e-3
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        make_optimizer("adam", model.parameters(), 1e-3, weight_decay=-1.0)
