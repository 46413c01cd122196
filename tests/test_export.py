"""Structured export: dead units removed, outputs equal to the masked model's, on real data."""
import copy

import pytest
import torch

from bingo.harness.models import build_model
from bingo.pruning.export import inference_seconds, shrink
from bingo.pruning.masks import apply_masks


def _kill_units(model, name, rows, gen, outgoing_of=None):
    """Mask whole rows of ``name`` (no input), and for ``outgoing_of`` whole input columns."""
    w = model.get_parameter(name)
    keep = torch.ones_like(w, dtype=torch.bool)
    dead = torch.randperm(w.shape[0], generator=gen)[:rows]
    keep[dead] = False
    masks = {name: keep}
    if outgoing_of is not None:
        nxt, cols = outgoing_of
        wn = model.get_parameter(nxt)
        k2 = torch.ones_like(wn, dtype=torch.bool)
        k2[:, torch.randperm(wn.shape[1], generator=gen)[:cols]] = False
        masks[nxt] = k2
    apply_masks(model, masks)
    return dead


@pytest.mark.parametrize("name", ["lenet300", "convnet"])
def test_shrink_keeps_outputs_and_removes_dead_units(name, mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    gen = torch.Generator().manual_seed(fresh_seed)
    model = build_model(name)
    with torch.no_grad():  # non-zero biases: dead units then output constants to fold
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.uniform_(-0.3, 0.3)
    if name == "lenet300":
        _kill_units(model, "fc1.weight", 97, gen, outgoing_of=("fc3.weight", 13))
        _kill_units(model, "fc2.weight", 11, gen)
    else:
        _kill_units(model, "conv1.weight", 3, gen)
        _kill_units(model, "conv2.weight", 5, gen)
        _kill_units(model, "fc1.weight", 9, gen)
    before = copy.deepcopy(model.state_dict())
    small, report = shrink(model)
    x = mnist.test.images[:512]
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    assert report.params_after < report.params_before
    assert sum(report.removed.values()) >= (97 + 11 if name == "lenet300" else 3 + 5 + 9)
    for k, v in model.state_dict().items():  # the pruned model is untouched
        assert torch.equal(v, before[k])
    assert inference_seconds(small, x, repeats=3) > 0


def test_shrink_refuses_what_it_cannot_see_through():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.Linear(3, 2))
    with pytest.raises(TypeError, match="cannot see through BatchNorm1d"):
        shrink(model)
    with pytest.raises(TypeError, match="nn.Sequential"):
        shrink(torch.nn.Linear(3, 2))
