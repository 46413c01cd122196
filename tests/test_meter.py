"""The Meter: a measurement resumes from kept activations (layers, blocks, blocks that
write their input in place, a Sequential subclass with a forward of its own, char-gpt)
and gives the losses of whole forwards; its last gradient is reused only at the same
masks; a swap trial's forward measures what its gradient pass measures."""

import pytest
import torch

import bingo
from bingo.evidence.meter import Meter, layer_ranks
from bingo.engine.losses import cross_entropy
from bingo.harness.data import load_dataset
from bingo.harness.gpt import CharGPT
from bingo.harness.models import build_model
from tests import margins
from tests.test_search import snapshot, train_steps


class Skip(torch.nn.Sequential):
    """A Sequential subclass with its own forward (a skip connection): one block, not a
    chain of its children."""

    def forward(self, x):
        return self[1](self[0](x)) + x


class HalvesItsInput(torch.nn.Module):
    """A block that writes its input in place: a kept activation it reads goes stale."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)

    def forward(self, x):
        x.mul_(0.5)
        return torch.relu(self.fc(x)) + x


def chain_search(name, mnist, data_dir, seed):
    """A trained search on one of the chains the meter resumes: layers (the conv net, an
    MLP with in-place ReLUs), blocks that write their input in place, a Sequential
    subclass with a forward of its own, and char-gpt's blocks on real tinyshakespeare
    windows."""
    torch.manual_seed(seed)
    nn = torch.nn
    if name == "char-gpt":
        model = CharGPT(layers=2, width=16, heads=2, context=16)
        search = bingo.TicketSearch(model, variants=0, calibration=40)
        text = load_dataset("tinyshakespeare", data_dir).train
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _, (x, y) in zip(range(6), text.batches(12, gen)):
            x, y = x[:, :16], y[:, :16]
            opt.zero_grad()
            cross_entropy(model(x), y).backward()
            opt.step()
            search.step(x, y)
        return model, search
    model = {"convnet": lambda: build_model("convnet"),
             "mlp-inplace": lambda: nn.Sequential(
                 nn.Flatten(), nn.Linear(784, 37), nn.ReLU(inplace=True), nn.Linear(37, 23),
                 nn.ReLU(inplace=True), nn.Linear(23, 10)),
             "blocks-inplace": lambda: nn.Sequential(
                 nn.Flatten(), nn.Linear(784, 29), HalvesItsInput(29),
                 nn.Sequential(HalvesItsInput(29), nn.Linear(29, 10))),
             "skip-sequential": lambda: nn.Sequential(
                 nn.Flatten(), nn.Linear(784, 31), Skip(nn.Linear(31, 31), nn.Tanh()),
                 nn.Linear(31, 10))}[name]()
    search = bingo.TicketSearch(model, variants=0, calibration=300)
    train_steps(model, mnist.train, 6, seed=seed, search=search)
    return model, search


@pytest.mark.parametrize("model_name", ["convnet", "mlp-inplace", "blocks-inplace",
                                        "skip-sequential", "char-gpt"])
@pytest.mark.parametrize("budget", [256 << 20, 1])
def test_kept_prefixes_give_the_losses_of_whole_forwards(mnist, data_dir, model_name, budget,
                                                         monkeypatch, fresh_seed):
    """The calibration meter resumes a forward from the activation entering a block that
    holds targets, kept for the pruned counts before it: along a budget search's moves
    (pairs of layers, revisits) every loss equals a whole forward's bit for bit, also with
    in-place layers, with blocks that write their input in place, and with the kept
    activations evicted down to one; the model is untouched."""
    monkeypatch.setattr("bingo.evidence.meter.PREFIX_BYTES", budget)
    model, search = chain_search(model_name, mnist, data_dir, fresh_seed)
    before = snapshot(model)
    kept, whole = Meter(search), Meter(search)
    whole._prefixes = None
    assert kept.blocks is not None
    assert sum(len(inside) for _, _, inside in kept.blocks) == len(search.targets)
    gen = torch.Generator().manual_seed(fresh_seed)
    scores = {n: torch.rand(w.shape, generator=gen) for n, w in kept.weights.items()}
    ranks = layer_ranks(scores)
    sizes = {n: w.numel() for n, w in kept.weights.items()}
    names = list(sizes)
    split = {n: int(0.7 * sizes[n]) for n in names}
    seen = [dict(split)]
    for trial in range(30):
        if trial % 5 == 4:  # back to an earlier split
            split = dict(seen[int(torch.randint(len(seen), (1,), generator=gen))])
        else:
            a, b = (names[int(i)] for i in torch.randperm(len(names), generator=gen)[:2])
            d = min(1 + int(torch.randint(40, (1,), generator=gen)), split[a],
                    sizes[b] - split[b])
            split[a] -= d
            split[b] += d
            seen.append(dict(split))
        assert kept.loss(ranks, split) == whole.loss(ranks, split), (trial, split)
    if budget == 1:  # one activation kept at a time: correct, seldom reused
        assert len(kept._prefixes.kept) == 1
    else:
        # 29 of the 30 trials resumed on each of 55 seeds of 0-59 (tests/margins.py)
        margins.record(f"prefixes ({model_name}): forwards resumed", kept._prefixes.resumed)
        assert kept._prefixes.resumed > 0
    other = layer_ranks({n: -s for n, s in scores.items()})  # a new ranking
    assert kept.loss(other, split) == whole.loss(other, split)
    assert all(torch.equal(v, before[0][k]) for k, v in snapshot(model)[0].items())


def test_the_meter_reuses_its_last_gradient_only_at_the_same_masks(mnist, fresh_seed):
    """``loss_and_grad`` asked again at the masks of its last call returns that call's loss
    and gradients without a forward; other masks, or the same dict written in place since,
    are measured again, and every answer equals a fresh meter's."""
    torch.manual_seed(fresh_seed)
    model = build_model("lenet300")
    search = bingo.TicketSearch(model, variants=0, calibration=200)
    train_steps(model, mnist.train, 5, seed=fresh_seed, search=search)
    meter = Meter(search)
    gen = torch.Generator().manual_seed(fresh_seed)
    keep = {n: torch.rand(w.shape, generator=gen) > 0.6 for n, w in meter.weights.items()}

    def fresh(masks):
        return Meter(search).loss_and_grad(masks)

    def same(a, b):
        return a[0] == b[0] and all(torch.equal(a[1][n], b[1][n]) for n in a[1])

    first = meter.loss_and_grad(keep)
    assert same(first, fresh(keep)) and meter.evaluations == 1
    again = meter.loss_and_grad({n: k.clone() for n, k in keep.items()})
    assert same(again, first) and meter.evaluations == 1  # reused
    name = next(iter(keep))
    keep[name][0, :5] = ~keep[name][0, :5]  # the caller's dict written in place
    changed = meter.loss_and_grad(keep)
    assert meter.evaluations == 2 and same(changed, fresh(keep)) and not same(changed, first)


@pytest.mark.parametrize("model_name", ["convnet", "mlp-inplace", "char-gpt"])
def test_a_swap_trial_s_forward_measures_what_its_gradient_pass_measures(
        mnist, data_dir, model_name, fresh_seed):
    """The swap search measures a trial by a forward alone (``loss_at``) and asks for the
    gradient only where the trial is kept: both give the same loss bit for bit, so the
    search accepts exactly the swaps it accepted when every trial took a gradient pass."""
    _, search = chain_search(model_name, mnist, data_dir, fresh_seed)
    meter = Meter(search)
    gen = torch.Generator().manual_seed(fresh_seed)
    for share in (0.3, 0.8):
        keep = {n: torch.rand(w.shape, generator=gen) > share for n, w in meter.weights.items()}
        assert meter.loss_at(keep) == meter.loss_and_grad(keep)[0]
