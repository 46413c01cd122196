"""The ``activation`` candidate (bingo.evidence.activations): |w| times its input's rms on
the kept examples, over the layer's mean, checked against a direct computation on real
images through a conv net and an MLP, and leaving the model as it was."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bingo import TicketSearch
from bingo.evidence.candidates import available
from tests.test_search import bn_dropout_net, snapshot, train_steps


def _conv_net() -> nn.Module:  # awkward sizes, a stride, padding, BatchNorm, a grouped conv
    return nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.Conv2d(5, 7, 4, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(7, 7, 3, groups=7), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(63, 10))


def _direct(model: nn.Module, x: torch.Tensor) -> dict:
    """Each scaled layer's input rms by hand: unfolded patches for a conv."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0]))
             for i, m in enumerate(model) if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(x)
    for h in hooks:
        h.remove()
    out = {}
    for i, inputs in seen.items():
        m = model[i]
        if isinstance(m, nn.Conv2d):
            if m.groups != 1:
                continue
            cols = F.unfold(inputs.double(), m.kernel_size, m.dilation, m.padding, m.stride)
            rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        else:
            rows = inputs.double().reshape(-1, inputs.shape[-1])
        out[f"{i}.weight"] = rows.pow(2).mean(0).sqrt()
    return out


def test_activation_scores_are_magnitude_times_input_rms(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = _conv_net()
    images = mnist.train.images.view(-1, 1, 28, 28)
    data = type(mnist.train)(images, mnist.train.labels)
    search = TicketSearch(model, variants=0, calibration=192, seed=fresh_seed)
    train_steps(model, data, 6, seed=fresh_seed, search=search)
    assert "activation" in available(search)
    before = snapshot(model)
    model.train()
    scores = search.significance("activation")
    after = snapshot(model)
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k  # BatchNorm buffers too
    assert torch.equal(before[3], after[3]) and model.training
    rms = _direct(model, search.calibration_batch()[0])
    assert set(rms) == {"0.weight", "3.weight", "9.weight"}
    for name, w in ((n, p.detach()) for n, p in model.named_parameters() if n.endswith("weight")
                    and p.dim() > 1):
        if name in rms:
            factor = (rms[name] / rms[name].mean()).float().view((1,) + tuple(w.shape[1:]))
            torch.testing.assert_close(scores[name], w.abs() * factor, rtol=1e-5, atol=1e-7)
        else:  # the grouped conv: magnitude alone
            assert torch.equal(scores[name], w.abs()), name


def test_weights_fed_by_units_dead_on_every_kept_example_rank_lowest(mnist, fresh_seed):
    torch.manual_seed(fresh_seed)
    model = bn_dropout_net()
    search = TicketSearch(model, variants=0, calibration=256, seed=fresh_seed)
    train_steps(model, mnist.train, 8, seed=fresh_seed, search=search)
    dead = torch.zeros(37, dtype=torch.bool)
    dead[torch.randperm(37)[:5]] = True
    with torch.no_grad():  # BatchNorm's shift far below zero: the ReLU keeps them at 0
        model.bn.bias[dead] = -1e4
    s = search.significance("activation")["fc2.weight"]
    assert bool((s[:, dead] == 0).all()) and bool((s[:, ~dead] > 0).all())
    assert bool((search.significance("magnitude")["fc2.weight"][:, dead] > 0).all())
