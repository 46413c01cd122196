"""Where each prunable tensor sits in the search's element space, checked against numbers
worked out by hand, and the subset a variant really evaluates checked against the Philox
stream at a hand-computed global index (not through ``Target.offset`` or
``reference.subset_masks``, which the code under test uses itself)."""
import pytest
import torch
from torch import nn

from bingo import TicketSearch
from bingo.engine.subsets import M32, fraction_to_threshold, philox4x32, subset_mask
from bingo.engine.targets import select_targets
from bingo.harness.models import convnet, lenet300


def layout(model: nn.Module, granularity: str):
    """(name, offset, size) of every Linear/Conv weight in registration order, as running
    sums of the sizes: the layout the stream contract promises, derived here on its own."""
    out, offset = [], 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            size = module.weight.numel() if granularity == "weight" else module.weight.shape[0]
            out.append((f"{name}.weight", offset, size))
            offset += size
    return out


def independent_masks(model: nn.Module, granularity: str, seed: int, step: int, variants,
                      threshold: int):
    """{weight name: bool [len(variants), size]}: one draw over the whole element space from
    0, cut at the running sums of the sizes."""
    parts = layout(model, granularity)
    total = parts[-1][1] + parts[-1][2]
    flat = subset_mask(seed, step, list(variants), 0, total, threshold)
    return {name: flat[:, offset:offset + size] for name, offset, size in parts}


def philox_decision(seed: int, step: int, variant: int, e: int, threshold: int) -> bool:
    """Whether global element ``e`` is reset, from one Philox-4x32-10 call worked out here:
    counter (e // 16, variant, step lo, step hi), key (seed lo, seed hi), byte e % 4 of word
    (e // 4) % 4."""
    words = philox4x32(*[torch.tensor([c], dtype=torch.int64) for c in
                         (e // 16, variant, step & M32, step >> 32)], seed & M32, seed >> 32)
    byte = (int(words[(e // 4) % 4]) >> (8 * (e % 4))) & 0xFF
    return byte < threshold


def test_offsets_are_the_running_sums_of_the_sizes():
    # LeNet-300-100: 784*300 = 235,200, 300*100 = 30,000, 100*10 = 1,000 weights
    got = [(t.name, t.offset, t.size) for t in select_targets(lenet300())]
    assert got == [("fc1.weight", 0, 235_200), ("fc2.weight", 235_200, 30_000),
                   ("fc3.weight", 265_200, 1_000)]
    got = [(t.name, t.offset, t.size) for t in select_targets(lenet300(), granularity="neuron")]
    assert got == [("fc1.weight", 0, 300), ("fc2.weight", 300, 100), ("fc3.weight", 400, 10)]
    # the conv net: 8*1*5*5 = 200, 16*8*5*5 = 3,200, 64*256 = 16,384, 10*64 = 640
    got = [(t.offset, t.size) for t in select_targets(convnet())]
    assert got == [(0, 200), (200, 3_200), (3_400, 16_384), (19_784, 640)]
    # leaving a tensor out moves the later ones down
    got = [(t.name, t.offset) for t in select_targets(lenet300(), exclude="fc1.weight")]
    assert got == [("fc2.weight", 0), ("fc3.weight", 30_000)]
    for granularity in ("weight", "neuron"):
        for make in (lenet300, convnet):
            model = make()
            want = layout(model, granularity)
            assert [(t.name, t.offset, t.size) for t in select_targets(
                model, granularity=granularity)] == want


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_a_variant_resets_what_the_stream_says_at_the_global_index(granularity, fresh_seed,
                                                                   monkeypatch, batch):
    """The weights each variant's forward really used, captured by hooks, against the
    Philox decision at e = (elements of the tensors before) + (index within the tensor):
    for fc2[i, j] at weight granularity e = 784 * 300 + 300 * i + j."""
    monkeypatch.setenv("BINGO_BACKEND", "torch")  # the reference: one forward per variant
    torch.manual_seed(fresh_seed % 10_000)
    model = lenet300()
    seed = fresh_seed | (fresh_seed % 7) << 32  # both key words in play
    step_high = (fresh_seed % 5) << 32          # and both step words
    search = TicketSearch(model, fraction=0.3, variants=3, seed=seed, granularity=granularity)
    search.step_count = step_high + 17
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # every weight now differs from its initial value
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p) + 1e-3)
    x, y = batch
    nn.functional.cross_entropy(model(x), y).backward()  # gradients for the proxies
    seen = {name: [] for name in ("fc1", "fc2", "fc3")}
    for name in seen:
        getattr(model, name).register_forward_pre_hook(
            lambda mod, inp, name=name: seen[name].append((mod.weight.clone(), mod.bias.clone())))
    search.step(x, y)
    current = dict(model.named_parameters())
    threshold = fraction_to_threshold(0.3)
    gen = torch.Generator().manual_seed(fresh_seed)
    before = {"fc1": 0, "fc2": 784 * 300, "fc3": 784 * 300 + 300 * 100}
    if granularity == "neuron":
        before = {"fc1": 0, "fc2": 300, "fc3": 400}
    outcomes = set()
    for name, (rows, cols) in (("fc1", (300, 784)), ("fc2", (100, 300)), ("fc3", (10, 100))):
        assert len(seen[name]) == 1 + 3  # the unchanged model, then each variant
        picks = [(0, 0), (rows - 1, cols - 1)] + [
            (int(torch.randint(rows, (1,), generator=gen)),
             int(torch.randint(cols, (1,), generator=gen))) for _ in range(40)]
        for k in range(3):
            weight, bias = seen[name][1 + k]
            for i, j in picks:
                e = before[name] + (cols * i + j if granularity == "weight" else i)
                reset = philox_decision(seed, step_high + 17, k, e, threshold)
                want = (init if reset else current)[f"{name}.weight"][i, j]
                assert weight[i, j] == want, (name, k, i, j, e, reset)
                if granularity == "neuron":
                    assert bias[i] == (init if reset else current)[f"{name}.bias"][i]
                outcomes.add(reset)
    assert outcomes == {True, False}
