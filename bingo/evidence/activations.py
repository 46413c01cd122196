"""The ``activation`` candidate: each weight's magnitude times the size of the input it
multiplies, |w_ij| * rms(x_j), with x_j measured on the search's kept examples in one
forward pass of the dense network (Wanda's score, Sun et al. 2023, without its per-row
cut: the calibrated estimator finds the layer budgets). A weight whose input is small on
every kept example (a unit or channel a ReLU keeps at zero) goes before an equally large
one that carries signal; magnitude alone cannot see that.

Each layer's factors are divided by their mean, so a layer's scores keep magnitude's
scale and the global split of the two candidates starts alike. Under torch.distributed
the mean squares are averaged over every rank's examples, so the scores agree."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Sequence

import torch
from torch import nn

from ..engine.borrow import Borrowed
from ..pruning.refit import input_rows

if TYPE_CHECKING:
    from ..engine.distributed import Ranks
    from ..engine.targets import Target

CHUNK = 64  # kept examples per forward (a ResNet-20 stage-1 conv's patches: 37 MiB)


def _scaled(module: nn.Module) -> bool:
    """Layers whose weight, viewed [out, in features], multiplies ``input_rows``."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d)
                                             and module.groups == 1)


def input_mean_squares(model: nn.Module, targets: Sequence["Target"], inputs: torch.Tensor,
                       ranks: "Ranks") -> Dict[str, torch.Tensor]:
    """{target name: mean over the rows of ``inputs`` (every rank's) of each input feature
    squared}, float64, for the targets that are the weight of a Linear or an ungrouped
    Conv2d; the model borrowed (eval mode, RNG restored), never written."""
    owners: Dict[str, nn.Module] = {}
    for t in targets:
        module = model.get_submodule(t.module_name)
        if t.attr == "weight" and _scaled(module):
            owners[t.name] = module
    sums: Dict[str, torch.Tensor] = {}
    rows: Dict[str, int] = {n: 0 for n in owners}
    hooks: List = []

    def hook_for(name: str, module: nn.Module):
        def hook(_mod, args, _out):
            x = input_rows(module, args[0].detach()).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            rows[name] += x.shape[0]
        return hook

    try:
        for name, module in owners.items():
            hooks.append(module.register_forward_hook(hook_for(name, module)))
        with Borrowed(model, [inputs.device]), torch.no_grad():
            for i in range(0, len(inputs), CHUNK):
                model(inputs[i:i + CHUNK])
    finally:
        for h in hooks:
            h.remove()
    local = {n: sums[n] / rows[n] for n in sums if rows[n]}
    # every rank's rows per example are alike, so weighting by examples weights by rows
    return ranks.mean_tensors(local, len(inputs)) if local else {}


def activation_scores(model: nn.Module, targets: Sequence["Target"],
                      weights: Dict[str, torch.Tensor], inputs: torch.Tensor,
                      ranks: "Ranks") -> Dict[str, torch.Tensor]:
    """|w| times each input's rms over ``inputs``, divided by the layer's mean rms; |w|
    alone for targets that are not a Linear or ungrouped Conv2d weight."""
    squares = input_mean_squares(model, targets, inputs, ranks)
    out: Dict[str, torch.Tensor] = {}
    for t in targets:
        w = weights[t.name].float()
        ms = squares.get(t.name)
        if ms is None:
            out[t.name] = w.abs()
            continue
        rms = ms.sqrt()
        mean = float(rms.mean())
        factor = (rms / mean if mean > 0 else torch.ones_like(rms)).float().to(w.device)
        out[t.name] = w.abs() * factor.view((1,) + tuple(w.shape[1:]))
    return out
