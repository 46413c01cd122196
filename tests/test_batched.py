"""Batched evaluation (bingo.engine.batched) against the reference loop, on real MNIST batches:
the Sequential fast path (Linear and Conv2d targets), the vmap path for other models,
and the variant-by-variant fallback."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bingo.engine import batched, cpp, reference
from bingo.engine.reference import SearchBatch, SearchPlan
from bingo.engine.targets import select_targets
from bingo.harness.models import convnet, lenet300, vgg
from tests import needs
from tests.test_search import bn_dropout_net, train_steps


class TwoPath(nn.Module):
    """Not a Sequential: a skip connection around fc2."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 40), nn.Linear(40, 40), nn.Linear(40, 10)

    def forward(self, x):
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(h + F.relu(self.fc2(h)))


def _setup(model, mnist, granularity, seed, metric="loss", variants=19, size=50):
    torch.manual_seed(seed % 1000)
    train_steps(model, mnist.train, 3)  # weights differ from their initial values
    initial = {n: p.detach() + 0.05 * torch.randn_like(p) for n, p in model.named_parameters()}
    targets = select_targets(model, granularity=granularity)
    plan = SearchPlan(seed, 5, variants, 26, granularity, sum(t.size for t in targets))
    current = dict(model.named_parameters())
    x, y = mnist.train.images[:size], mnist.train.labels[:size]
    model.eval()
    return plan, targets, current, initial, SearchBatch(model, x, y, metric, F.cross_entropy)


def _close(got, want, metric, batch):
    assert got[0] == pytest.approx(want[0], rel=1e-5, abs=1e-6)
    tol = dict(rtol=1e-4, atol=1e-5) if metric == "loss" else dict(rtol=0, atol=1.5 / batch)
    torch.testing.assert_close(torch.tensor(got[1]), torch.tensor(want[1]), **tol)
    assert len(set(want[1])) > 1


@pytest.mark.parametrize("make", [lenet300, convnet])
@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize("ops", [reference, cpp], ids=["torch", "cpp"])
def test_sequential_path_matches_the_loop(mnist, make, granularity, ops, fresh_seed):
    if ops is cpp:
        needs.cpp_backend()
    plan, targets, current, initial, batch = _setup(make(), mnist, granularity, fresh_seed)
    assert batched.sequential_layers(batch.model, targets) is not None
    with torch.no_grad():
        want = reference.evaluate_variants(plan, targets, current, initial, batch)
        got = batched.evaluate_variants(plan, targets, current, initial, batch, ops=ops)
    _close(got, want, "loss", 50)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize("ops", [reference, cpp], ids=["torch", "cpp"])
def test_a_cifar_vgg_takes_the_sequential_path_and_matches_the_loop(cifar10, granularity, ops,
                                                                    fresh_seed):
    """The VGG (3x3 convs with BatchNorm in eval mode, max-pools, global average pooling) on
    real CIFAR-10 images: the fast path, not vmap, with every one of its 9 targets."""
    if ops is cpp:
        needs.cpp_backend()
    plan, targets, current, initial, batch = _setup(vgg(11, 3), cifar10, granularity,
                                                    fresh_seed, variants=11, size=37)
    layers = batched.sequential_layers(batch.model, targets)
    assert layers is not None and sum(t is not None for _, _, t in layers) == 9
    with torch.no_grad():
        want = reference.evaluate_variants(plan, targets, current, initial, batch)
        got = batched.evaluate_variants(plan, targets, current, initial, batch, ops=ops)
    _close(got, want, "loss", 37)


def test_sequential_path_accuracy_metric(mnist, fresh_seed):
    plan, targets, current, initial, batch = _setup(convnet(), mnist, "weight", fresh_seed,
                                                    metric="accuracy", size=130)
    with torch.no_grad():
        want = reference.evaluate_variants(plan, targets, current, initial, batch)
        got = batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
    _close(got, want, "accuracy", 130)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_other_models_take_the_vmap_path(mnist, granularity, fresh_seed, monkeypatch):
    plan, targets, current, initial, batch = _setup(TwoPath(), mnist, granularity, fresh_seed)
    assert batched.sequential_layers(batch.model, targets) is None
    calls = []
    vmapped = batched.evaluate_vmapped
    monkeypatch.setattr(batched, "evaluate_vmapped", lambda *a, **k: calls.append(1) or
                        vmapped(*a, **k))
    with torch.no_grad():
        want = reference.evaluate_variants(plan, targets, current, initial, batch)
        got = batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
    assert calls
    _close(got, want, "loss", 50)


def test_untraceable_model_falls_back_to_the_loop_with_a_warning(mnist, fresh_seed):
    model = bn_dropout_net()  # Jitter draws random numbers: vmap refuses it
    plan, targets, current, initial, batch = _setup(model, mnist, "weight", fresh_seed)
    batched._warned.clear()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
        batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
        want = reference.evaluate_variants(plan, targets, current, initial, batch)
    assert got == want  # the same loop, bit for bit
    assert sum("variant by variant" in str(w.message) for w in caught) == 1  # warned once


def test_what_the_fast_path_refuses():
    model = lenet300()
    targets = select_targets(model)
    assert batched.sequential_layers(model, targets) is not None
    handle = model.fc2.register_forward_hook(lambda *a: None)
    assert batched.sequential_layers(model, targets) is None  # hooks must run as written
    handle.remove()
    with_bias = select_targets(model, include=["*"])
    assert batched.sequential_layers(model, with_bias) is None  # biases as targets
    odd = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=0))
    assert batched.sequential_layers(odd, select_targets(odd)) is None  # mixes samples

    class Skip(nn.Sequential):  # runs its children with a skip connection, not in a chain
        def forward(self, x):
            return self[0](x) + x
    skip = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), Skip(nn.Linear(8, 8)))
    assert batched.sequential_layers(skip, select_targets(skip)) is None
    assert batched.sequential_layers(Skip(nn.Linear(8, 8)), select_targets(Skip(nn.Linear(8, 8)))) \
        is None


def test_small_activation_budget_splits_the_pass_same_results(mnist, fresh_seed, monkeypatch):
    plan, targets, current, initial, batch = _setup(convnet(), mnist, "weight", fresh_seed)
    with torch.no_grad():
        whole = batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
        budget = 3 * 50 * 8 * 24 * 24 * 4  # three variants' conv1 output per pass
        monkeypatch.setattr(batched, "ACTIVATION_BUDGET", budget)
        passes = []
        chunks = SearchBatch.chunks
        monkeypatch.setattr(SearchBatch, "chunks",
                            lambda self, p, size: passes.append(size) or chunks(self, p, size))
        split = batched.evaluate_variants(plan, targets, current, initial, batch, ops=reference)
    assert passes == [3]
    _close(split, whole, "loss", 50)
