"""The least-squares refit after pruning (bingo.refit): each refit layer's kept weights are
the optimum of its reconstruction objective (checked by autograd on the real layer, not
by the solver's own algebra), the masks and the reference stay as they were, a refused
refit changes nothing, and on real MNIST it recovers what one-shot pruning lost."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from bingo.harness.baselines.scores import magnitude_scores
from bingo.harness.cli import main
from bingo.harness.models import paper_mlp
from bingo.harness.training import accuracy, make_optimizer, train
from bingo.pruning.masks import copy_model, prune
from bingo.pruning.refit import prune_and_refit, refit
from tests import margins


def _conv_model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 7, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(7, 5, 3, dilation=2), nn.Tanh(), nn.Flatten(),
                         nn.Linear(5 * 3 * 2, 11, bias=False), nn.ReLU(), nn.Linear(11, 6))


def _mlp_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(23, 19), nn.ReLU(), nn.Linear(19, 13), nn.Tanh(),
                         nn.Linear(13, 7))


class _Skips(nn.Module):
    """A pruned layer the forward never calls."""

    def __init__(self):
        super().__init__()
        self.used, self.spare = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x):
        return self.used(x)


def _layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def _apply(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation)
    return F.linear(x, weight, bias)


@pytest.mark.parametrize("build, shape", [(_conv_model, (41, 3, 13, 11)), (_mlp_model, (57, 23))])
def test_refit_solves_each_layers_reconstruction_in_order(build, shape, fresh_seed):
    torch.manual_seed(fresh_seed)
    dense = build().double()
    x = torch.randn(shape, dtype=torch.float64)
    model = copy_model(dense)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for n in layers:
        torch_prune.random_unstructured(model.get_submodule(n), "weight", amount=0.6)
    masks = {n: model.get_submodule(n).weight_mask.clone() for n in layers}
    before = {n: model.get_submodule(n).weight_orig.detach().clone() for n in layers}
    reference_state = {k: v.clone() for k, v in dense.state_dict().items()}
    model.train()

    report = refit(model, dense, x, ridge=1e-10, batch_size=17)  # batches of an odd size

    assert model.training and list(report.layers) == layers
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in reference_state.items())
    for n in layers:
        layer, target = model.get_submodule(n), dense.get_submodule(n)
        assert torch.equal(layer.weight_mask, masks[n])
        assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
        # the layer's input comes from the refit layers before it
        inp, y = _layer_input(model, layer, x), _layer_input(dense, target, x)
        y = _apply(target, y, target.weight, target.bias).detach()

        def residual(weight, bias):
            out = _apply(layer, inp, weight * layer.weight_mask, bias)
            return ((out - y) ** 2).sum()

        def gradient(weight):
            w = weight.detach().clone().requires_grad_(True)
            b = None if layer.bias is None else layer.bias.detach().clone().requires_grad_(True)
            loss = residual(w, b)
            grads = torch.autograd.grad(loss, [t for t in (w, b) if t is not None])
            kept = torch.cat([grads[0][layer.weight_mask != 0], *grads[1:]])
            return loss.item(), kept.norm().item()

        loss_after, grad_after = gradient(layer.weight_orig)
        loss_before, grad_before = gradient(before[n])  # the kept weights before the refit
        assert grad_after < 1e-6 * max(grad_before, 1e-3), n
        assert loss_after <= loss_before * (1 + 1e-9)
        dims = (0, 2, 3) if y.ndim == 4 else (0,)
        spread = ((y - y.mean(dims, keepdim=True)) ** 2).sum().item()
        assert report.layers[n].error_after == pytest.approx(loss_after / spread, rel=1e-6, abs=1e-9)
        assert report.layers[n].rows == y.numel() // y.shape[1]


def test_ridge_is_relative_to_each_rows_kept_diagonal(fresh_seed):
    torch.manual_seed(fresh_seed)
    dense = _mlp_model().double()
    x = torch.randn(37, 23, dtype=torch.float64)
    model = copy_model(dense)
    torch_prune.random_unstructured(model[0], "weight", amount=0.7)
    ridge = 0.05
    refit(model, dense, x, ridge=ridge, layers=["0"])
    layer = model[0]
    features = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    y = dense[0](x).detach()
    for r in range(layer.weight.shape[0]):
        kept = torch.cat([layer.weight_mask[r] != 0, torch.tensor([True])])
        theta = torch.cat([layer.weight_orig[r], layer.bias[r:r + 1]]).detach()[kept]
        theta.requires_grad_(True)
        a = features[:, kept]
        damping = ridge * (a * a).sum(0).mean()
        loss = ((a @ theta - y[:, r]) ** 2).sum() + damping * (theta ** 2).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        assert grad.norm() < 1e-8 * max(1.0, y[:, r].norm().item())


def test_refit_refuses_with_the_fix_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    dense = _mlp_model()
    x = torch.randn(30, 23)
    model = copy_model(dense)
    with pytest.raises(ValueError, match="prune it first"):
        refit(model, dense, x)
    for n in ("0", "2", "4"):
        torch_prune.l1_unstructured(model.get_submodule(n), "weight", amount=0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def unchanged() -> bool:
        return all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    cases = [
        (dict(examples=x[:0]), "non-empty batch"),
        (dict(examples=torch.full_like(x, float("nan"))), "inf or NaN"),
        (dict(ridge=0.0), "ridge must be"),
        (dict(ridge=float("inf")), "ridge must be"),
        (dict(reference=nn.Sequential(nn.Linear(23, 18))), "pass the dense model"),
        (dict(layers=["1"]), "not a Linear or Conv2d"),
    ]
    for change, message in cases:
        args = dict(model=model, reference=dense, examples=x) | change
        with pytest.raises(ValueError, match=message):
            refit(**args)
        assert unchanged()
    broken = copy_model(dense)  # its last layer's outputs are inf: refused after two layers
    with torch.no_grad():
        broken[4].weight.fill_(float("inf"))
    with pytest.raises(ValueError, match="layer '4' sees inf or NaN"):
        refit(model, broken, x)
    assert unchanged() and torch.equal(model[0].weight, model[0].weight_orig * model[0].weight_mask)

    grouped = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2))
    torch_prune.l1_unstructured(grouped[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match="pass layers= without it"):
        refit(grouped, nn.Sequential(nn.Conv2d(4, 6, 3, groups=2)), torch.randn(5, 4, 7, 7))
    unused = _Skips()
    torch_prune.l1_unstructured(unused.spare, "weight", amount=0.5)
    with pytest.raises(ValueError, match="never reached"):
        refit(unused, copy_model(unused), torch.randn(4, 5))


def test_with_labels_a_refit_that_raises_the_loss_is_undone(fresh_seed):
    torch.manual_seed(fresh_seed)
    model = _mlp_model()
    x = torch.randn(300, 23)
    with torch.no_grad():
        model[4].weight.mul_(8.0)  # confident: a random stranger's refit cannot match it
        labels = model(x).argmax(1)  # the task the model already solves
    for n in ("0", "2", "4"):
        torch_prune.l1_unstructured(model.get_submodule(n), "weight", amount=0.3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    stranger = _mlp_model()  # a reference that solves something else
    report = refit(model, stranger, x, labels=labels)
    assert not report.kept and report.loss_after > report.loss_before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model[0].weight, model[0].weight_orig * model[0].weight_mask)
    with pytest.raises(ValueError, match="one to one"):
        refit(model, stranger, x, labels=labels[:-1])


def test_copy_model_copies_a_pruned_model_after_a_forward():
    model = _mlp_model()
    torch_prune.l1_unstructured(model[0], "weight", amount=0.5)
    model(torch.randn(3, 23)).sum().backward()  # the masked weight is now a computed tensor
    twin = copy_model(model)
    x = torch.randn(4, 23)
    assert torch.equal(twin(x), model(x))
    with torch.no_grad():
        twin[0].weight_orig.add_(1.0)
    assert not torch.equal(twin[0].weight_orig, model[0].weight_orig)


def test_refit_recovers_what_one_shot_pruning_lost_on_mnist(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    dense = paper_mlp()
    train(dense, mnist.train.subset(30000), epochs=1, batch_size=64, seed=fresh_seed,
          optimizer=make_optimizer("adam", dense.parameters(), 1e-3), progress=False)
    examples = mnist.train.images[-1024:]  # not among the images it trained on
    labels = mnist.train.labels[-1024:]
    model = copy_model(dense)
    pruning = prune(model, magnitude_scores(dense), sparsity=0.9)
    n = 784 * 128 + 128 * 64 + 64 * 10
    assert pruning.sparsity == round(0.9 * n) / n
    one_shot, full = accuracy(model, mnist.test), accuracy(dense, mnist.test)
    # magnitude pruning of an Adam-trained MLP loses points: 2.08 at least, 5.0 in the
    # median on seeds 0-99 (tests/margins.py), but 0.91 on CI's seed 3903217053, hence a
    # threshold of 0.5 (what the refit must then recover is relative to it)
    margins.record("refit: one-shot accuracy under dense - 0.005", full - 0.005 - one_shot)
    assert one_shot < full - 0.005
    report = refit(model, dense, examples, labels=labels)
    refit_accuracy = accuracy(model, mnist.test)
    # most of the loss recovered: the refit's gap to dense was at most 0.31 of one-shot's
    # (0.12 in the median) on seeds 0-99, hence a threshold of a half, or of 1 point where
    # one-shot lost little (CI's seed 3903217053: one-shot -0.91, refit -0.64 points)
    margins.record("refit: gap under max(0.5 x one-shot's, 0.01)",
                   max(0.5 * (full - one_shot), 0.01) - (full - refit_accuracy))
    assert full - refit_accuracy < max(0.5 * (full - one_shot), 0.01)
    assert refit_accuracy > one_shot
    assert all(layer.error_after < layer.error_before for layer in report.layers.values())
    assert report.kept and report.loss_after < report.loss_before
    # A kept weight whose input is 0 on every example is solved to exactly 0 (here fc2's
    # weights from 3 fc1 units made dead, kept on purpose), and the report, counted
    # again, says what is really there.
    dead = copy_model(dense)
    with torch.no_grad():
        dead.fc1.bias[:3] = -1e3
    scores = magnitude_scores(dead)
    scores["fc2.weight"][:, :3] = 1e9
    model = copy_model(dead)
    pruning = prune(model, scores, sparsity=0.9)
    refit(model, dead, examples)
    with torch.no_grad():
        silent = (torch.relu(model.fc1(examples.flatten(1))) == 0).all(0)
    kept = model.fc2.weight_mask.bool()
    assert silent[:3].all() and torch.equal(kept & (model.fc2.weight == 0), kept & silent)
    zeros = sum(int((getattr(model, f"fc{i}").weight == 0).sum()) for i in (1, 2, 3))
    assert zeros >= round(0.9 * n) + 3 * 64
    assert pruning.recount(model).sparsity == zeros / n

    val = lambda m: accuracy(m, mnist.val)  # noqa: E731
    plain = prune(copy_model(dense), magnitude_scores(dense), min_accuracy=0.9, evaluate=val,
                  tolerance=0.01)
    model = copy_model(dense)
    pruned, fit = prune_and_refit(model, magnitude_scores(dense), examples, labels=labels,
                                  min_accuracy=0.9, evaluate=val, tolerance=0.01)
    # the floor holds further with the refit: 3.9 points of sparsity at least, 7.0 in the
    # median on seeds 0-99
    margins.record("refit: floor's sparsity over plain + 0.02",
                   pruned.sparsity - plain.sparsity - 0.02)
    assert pruned.sparsity > plain.sparsity + 0.02
    assert fit.accuracy_after >= 0.9 and val(model) == fit.accuracy_after
    assert pruned.evaluations and pruned.min_accuracy == 0.9


def test_prune_and_compare_refit_from_the_command_line(data_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["prune", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs", "1",
                 "--train-limit", "3000", "--calibration", "512", "--sparsity", "0.9",
                 "--refit", "--out", str(out)]) == 0
    assert "refit" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["name"].endswith("_refit_seed0") and result["config"]["refit"]
    fit = result["refit"]
    assert set(fit["layers"]) == {"fc1", "fc2", "fc3"} and fit["examples"] == 512
    assert result["pruned_val_accuracy"] == fit["accuracy_after"] > fit["accuracy_before"]
    assert fit["kept"] and fit["loss_after"] < fit["loss_before"]
    n = 784 * 128 + 128 * 64 + 64 * 10  # kept weights of blank pixels are refit to 0
    assert result["sparsity"] > round(0.9 * n) / n and result["per_layer"]["fc1.weight"] > 0.9

    runs = tmp_path / "compare"
    assert main(["compare", "--data-dir", str(data_dir), "--model", "paper-mlp", "--epochs", "1",
                 "--train-limit", "3000", "--methods", "magnitude", "--sparsities", "0.9",
                 "--refit", "--out", str(runs), "--quiet"]) == 0
    results = json.loads((runs / "results.json").read_text())
    assert "_s0.9_refit_ft0_" in results["name"]
    (point,) = results["methods"][0]["points"]
    assert point["refit_kept"] and point["test_accuracy"] > point["test_accuracy_before_refit"]
    assert point["sparsity"] == 0.9 < point["zeros"]  # the goal, and the zeros really there
    for bad, message in ((["--finetune-epochs", "1", "--finetune-ramp", "4"], "give one"),
                         (["--calibration", "0"], "--calibration N")):
        assert main(["compare", "--data-dir", str(data_dir), "--methods", "magnitude",
                     "--sparsities", "0.9", "--refit", *bad, "--out", str(tmp_path / "bad"),
                     "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_compare_refits_every_row_on_the_last_examples_its_training_saw(data_dir, fresh_seed):
    from bingo.harness.compare import CompareJob
    from bingo.harness.data import batches
    from bingo.harness.methods import train_and_score
    from bingo.harness.shared_run import Harness
    seed, size, epochs = fresh_seed % 1000, 64, 2
    job = CompareJob(model="paper-mlp", data_dir=str(data_dir), epochs=epochs, train_limit=700,
                     methods=("bingo", "magnitude"), sparsities=(0.9,), refit=True,
                     calibration=300, seed=seed)
    h = Harness(job, progress=False, log=lambda m: None)
    order = torch.Generator().manual_seed(seed)            # the training loop's data order
    seen = [b for _ in range(epochs) for b in batches(h.train_split, size, order)]
    last_x, last_y = (torch.cat(t)[-300:] for t in zip(*seen))
    for method in ("bingo", "magnitude"):
        x, y = train_and_score(h, method).recent()
        assert torch.equal(x, last_x) and torch.equal(y, last_y), method
    assert not torch.equal(last_x, h.train_split.images[:300])  # not simply the first images
