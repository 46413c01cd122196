"""BatchNorm after a one-shot prune: ``bingo.recalibrate_batchnorm`` re-estimates the
statistics exactly (the expectation computed from hooked inputs here), changes nothing
else; ``Borrowed(batch_stats=True)`` normalizes by the batch and leaves the buffers; and
on a ResNet-20 trained on real CIFAR-10 images the measured estimators' loss of a mask is
the loss of the pruned, recalibrated network on the same kept examples."""
import copy

import pytest
import torch
from torch import nn

import bingo
from bingo.engine.borrow import Borrowed, batchnorm_layers
from bingo.harness.data import batches
from bingo.harness.models import build_model
from bingo.pruning.masks import apply_masks


def small_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 7), nn.BatchNorm1d(7), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(7, 3))


def bn_inputs(model: nn.Module, x: torch.Tensor) -> list:
    """The tensors entering each BatchNorm of a copy of ``model`` in which every BatchNorm
    normalizes by the batch (what a later one sees while an earlier one is re-estimated),
    dropout off; channels first and flattened."""
    model = copy.deepcopy(model).eval()
    seen = []
    for bn in batchnorm_layers(model):
        bn.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
        bn.training, bn.track_running_stats = True, False
    with torch.no_grad():
        model(x)
    return [t.transpose(0, 1).reshape(t.shape[1], -1) for t in seen]


def stats(t: torch.Tensor):
    return t.mean(1), t.var(1, unbiased=True)


@pytest.fixture
def net():
    torch.manual_seed(1234)
    model = small_net()
    for bn in batchnorm_layers(model):  # stale statistics, as after a cut
        bn.running_mean.uniform_(-3, 3)
        bn.running_var.uniform_(2, 5)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    model.train()
    return model


def test_recalibration_is_the_examples_statistics_and_changes_nothing_else(net):
    x = torch.randn(13, 3, 6, 6) * 2 + 0.7
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    assert bingo.recalibrate_batchnorm(net, x, batch_size=64) == 2
    for bn, t in zip(batchnorm_layers(net), bn_inputs(net, x)):
        mean, var = stats(t)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before[k]), k


def test_recalibration_in_chunks_averages_the_chunks_and_never_leaves_one_example(net):
    x = torch.randn(11, 3, 6, 6)
    bingo.recalibrate_batchnorm(net, x, batch_size=5)  # chunks 5 and 6: no chunk of 1
    for (bn, t5, t6) in zip(batchnorm_layers(net), bn_inputs(net, x[:5]),
                            bn_inputs(net, x[5:])):
        torch.testing.assert_close(bn.running_mean, (t5.mean(1) + t6.mean(1)) / 2)
        torch.testing.assert_close(bn.running_var, (t5.var(1) + t6.var(1)) / 2)


def test_recalibration_without_batchnorm_or_with_bad_input():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    before = copy.deepcopy(mlp.state_dict())
    assert bingo.recalibrate_batchnorm(mlp, torch.randn(5, 4)) == 0
    assert all(torch.equal(v, before[k]) for k, v in mlp.state_dict().items())
    with pytest.raises(ValueError, match="at least 2 examples"):
        bingo.recalibrate_batchnorm(small_net(), torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        bingo.recalibrate_batchnorm(small_net(), torch.randn(4, 3, 6, 6), batch_size=1)


def test_borrowed_batch_stats_normalize_by_the_batch_and_keep_the_buffers(net):
    x = torch.randn(9, 3, 6, 6)
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    expected = copy.deepcopy(net)
    expected.eval()
    for bn in batchnorm_layers(expected):
        bn.train()  # batch statistics; dropout stays off
    with torch.no_grad():
        want = expected(x)
        with Borrowed(net, [x.device], batch_stats=True):
            got = net(x)
            assert not any(m.training for m in net.modules()
                           if not isinstance(m, nn.modules.batchnorm._BatchNorm))
    torch.testing.assert_close(got, want)
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    assert all(bn.track_running_stats for bn in batchnorm_layers(net)) and net.training


def test_measured_loss_is_the_recalibrated_pruned_resnets_loss_on_cifar10(cifar10):
    torch.manual_seed(0)
    model = build_model("resnet20")
    search = bingo.TicketSearch(model, variants=0, calibration=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for x, y in list(batches(cifar10.train.subset(128), 64, generator=gen)):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        search.step(x, y)
    search.significance("budgeted", sparsity=0.9)
    c = search.last_calibration
    measured = c.loss_after_swaps if c.loss_after_swaps is not None else c.losses[c.chosen]
    pruned = copy.deepcopy(model)
    apply_masks(pruned, c.keep)
    x, y = search.calibration_batch()
    with torch.no_grad():
        stale = pruned.eval()(x)
    assert bingo.recalibrate_batchnorm(pruned, x) == 19  # 1 stem + 9 blocks x 2
    with torch.no_grad():
        deployed = float(nn.functional.cross_entropy(pruned.eval()(x), y))
        stale = float(nn.functional.cross_entropy(stale, y))
    assert abs(deployed - measured) < 2e-3, (deployed, measured)
    assert abs(stale - measured) > 10 * abs(deployed - measured)  # the stale stats differ


def test_a_floor_on_a_batchnorm_model_is_bisected_as_deployed(mnist):
    """``recalibrating(evaluate, examples)``: every trial of a --min-accuracy bisection
    measured with its own re-estimated statistics, so the floor holds for the network as
    it is deployed (recalibrated), and the bisection is not stopped early by the dense
    network's statistics. Real MNIST, a BatchNorm MLP trained briefly."""
    import torch.nn.functional as F

    from bingo.harness.baselines.scores import magnitude_scores
    from bingo.pruning.batchnorm import recalibrating
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.BatchNorm1d(128), nn.ReLU(),
                        nn.Linear(128, 10))
    x, y = mnist.train.images[:2048], mnist.train.labels[:2048]
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for i in range(0, 2048, 64):
        opt.zero_grad()
        F.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    vx, vy = mnist.val.images[:2000], mnist.val.labels[:2000]

    def val(m):
        m.eval()
        with torch.no_grad():
            return float((m(vx).argmax(1) == vy).float().mean())

    floor = val(net) - 0.03
    kept = x[-512:]
    model = copy.deepcopy(net)
    report = bingo.prune(model, magnitude_scores(model), min_accuracy=floor,
                         evaluate=recalibrating(val, kept))
    deployed = copy.deepcopy(model)
    bingo.recalibrate_batchnorm(deployed, kept)
    assert report.accuracy_after == pytest.approx(val(deployed), abs=1e-9)
    assert report.accuracy_after >= floor and report.sparsity > 0.3
    stale = copy.deepcopy(net)  # the same floor bisected with the dense statistics
    stale_report = bingo.prune(stale, magnitude_scores(stale), min_accuracy=floor,
                               evaluate=val)
    # measured with stale statistics the bisection stops early (97.5% against 88.7% here)
    assert report.sparsity > stale_report.sparsity + 0.03


def test_after_a_kept_refit_the_dense_statistics_stay(net):
    """``after_one_shot``: a refit solves each layer for the dense outputs, which the
    dense statistics normalize, so they stay; without a refit, or after a refused one,
    they are re-estimated on the examples."""
    from bingo.harness.baselines.scores import magnitude_scores
    from bingo.pruning.batchnorm import after_one_shot
    torch.manual_seed(5)
    x = torch.randn(96, 3, 6, 6)
    dense = copy.deepcopy(net).eval()
    buffers = {k: v.clone() for k, v in dense.state_dict().items() if "running" in k}
    pruned = copy.deepcopy(dense)
    bingo.prune(pruned, magnitude_scores(pruned), sparsity=0.6)
    fit = bingo.refit(pruned, dense, x)
    assert fit.kept
    assert after_one_shot(pruned, x, fit) == 0
    for k, v in buffers.items():
        assert torch.equal(pruned.state_dict()[k], v), k
    fit.kept = False  # a refit that raised the loss was undone: re-estimate
    refused = copy.deepcopy(pruned)
    assert after_one_shot(refused, x, fit) == 2
    plain = copy.deepcopy(pruned)
    assert after_one_shot(plain, x) == 2
    expected = copy.deepcopy(pruned)
    bingo.recalibrate_batchnorm(expected, x)
    for k in buffers:
        assert torch.equal(plain.state_dict()[k], expected.state_dict()[k])
        assert torch.equal(refused.state_dict()[k], expected.state_dict()[k])
        assert not torch.equal(plain.state_dict()[k], buffers[k])
