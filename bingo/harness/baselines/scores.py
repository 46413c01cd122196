"""Per-weight importance under the classic criteria; higher = keep (bingo's convention).

Each returns {parameter name: scores of its shape} for the targets of
:func:`bingo.select_targets` (Linear and Conv weights by default), ready for
:func:`bingo.prune`. None of them changes the model: gradients, modes and weights are
restored (SynFlow works on a copy).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ...engine.losses import cross_entropy
from ...engine.targets import Target, select_targets
from ...pruning.masks import prune

Scores = Dict[str, torch.Tensor]


def _params(model: nn.Module, targets: Sequence[Target]) -> List[torch.Tensor]:
    named = dict(model.named_parameters())
    return [named[t.name] for t in targets]


def _targets(model: nn.Module, targets: Optional[Sequence[Target]]) -> Sequence[Target]:
    return targets if targets is not None else select_targets(model)


def magnitude_scores(model: nn.Module, targets: Optional[Sequence[Target]] = None) -> Scores:
    """|w| of the current (effective) weights: masked weights score 0."""
    targets = _targets(model, targets)
    return {t.name: _effective(model, t).detach().abs().clone() for t in targets}


def _effective(model: nn.Module, t: Target) -> torch.Tensor:
    """The weight the forward uses (orig * mask under torch.nn.utils.prune)."""
    return getattr(model.get_submodule(t.module_name), t.attr)


def random_scores(model: nn.Module, generator: torch.Generator,
                  targets: Optional[Sequence[Target]] = None) -> Scores:
    """Uniform random scores: random pruning (globally, or within layer budgets)."""
    targets = _targets(model, targets)
    return {t.name: torch.rand(t.shape, generator=generator) for t in targets}


class _Borrow:
    """Eval mode off/on and gradients saved and restored around a scoring pass."""

    def __init__(self, model: nn.Module, train_mode: bool = True):
        self.model, self.train_mode = model, train_mode

    def __enter__(self):
        self.mode = {m: m.training for m in self.model.modules()}
        self.grads = {p: p.grad for p in self.model.parameters()}
        for p in self.model.parameters():
            p.grad = None
        self.model.train(self.train_mode)
        return self

    def __exit__(self, *exc):
        for m, mode in self.mode.items():
            m.training = mode
        for p, g in self.grads.items():
            p.grad = g


def snip_scores(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                targets: Optional[Sequence[Target]] = None) -> Scores:
    """SNIP (Lee et al. 2019): connection sensitivity |g ⊙ w| of the loss on a batch."""
    targets = _targets(model, targets)
    params = _params(model, targets)
    with _Borrow(model, train_mode=False):
        loss = cross_entropy(model(inputs), labels)
        grads = torch.autograd.grad(loss, params)
    return {t.name: (g * p).detach().abs() for t, g, p in zip(targets, grads, params)}


def grasp_scores(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 targets: Optional[Sequence[Target]] = None, temperature: float = 200.0) -> Scores:
    """GraSP (Wang et al. 2020): the official code removes the weights with the largest
    -w ⊙ Hg (g the loss gradient, H the Hessian, logits divided by ``temperature``), i.e.
    those whose removal increases the gradient norm most; so importance is w ⊙ Hg."""
    targets = _targets(model, targets)
    params = _params(model, targets)
    with _Borrow(model, train_mode=False):
        loss = cross_entropy(model(inputs) / temperature, labels)
        g = torch.autograd.grad(loss, params)
        loss = cross_entropy(model(inputs) / temperature, labels)
        g_graph = torch.autograd.grad(loss, params, create_graph=True)
        z = sum((a * b.detach()).sum() for a, b in zip(g_graph, g))
        hg = torch.autograd.grad(z, params)
    return {t.name: (p * h).detach() for t, p, h in zip(targets, params, hg)}


def synflow_scores(model: nn.Module, input_shape: Sequence[int] | torch.Tensor,
                   sparsity: float, iterations: int = 100,
                   targets: Optional[Sequence[Target]] = None) -> Scores:
    """SynFlow (Tanaka et al. 2020), data-free: on |w| (a copy of the model, in double
    precision, eval mode), R = sum of the output for an all-ones input; score |w ⊙ dR/dw|;
    prune to 1 - (1 - sparsity)^(k / iterations) at iteration k, rescoring each time.
    Returns the last scores, with the weights pruned along the way at -inf, so that
    ``prune(sparsity=...)`` reproduces the iterative mask.

    ``input_shape`` is one example's shape, or for a model of token ids an integer tensor
    of one example's ids (e.g. ``[1, context]``): its all-ones input is the all-ones
    one-hot, so every ``nn.Embedding`` that reads those ids returns the sum of its rows
    at each position (embeddings read by another index, as positions are, stay lookups)."""
    targets = _targets(model, targets)
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
    device = next(work.parameters()).device
    if isinstance(input_shape, torch.Tensor) and not input_shape.is_floating_point():
        ones = input_shape[:1].to(device)
        read = _all_ones_one_hot(work, ones)
    else:
        ones = torch.ones((1,) + tuple(input_shape), dtype=torch.float64, device=device)
        read = None
    scores: Scores = {}
    for k in range(1, iterations + 1):
        params = [_effective(work, t) for t in targets]
        leaves = _params(work, targets) if k == 1 else [
            getattr(work.get_submodule(t.module_name), t.attr + "_orig") for t in targets]
        out = work(ones).sum()
        if read is not None and not read:
            raise ValueError("synflow was given token ids, but no nn.Embedding of the model "
                             "reads them: give the input's shape instead for a model of "
                             "real-valued inputs")
        grads = torch.autograd.grad(out, leaves)
        scores = {t.name: (g * p).detach().abs() for t, g, p in zip(targets, grads, params)}
        if k < iterations:  # prune() ranks what is masked already first
            prune(work, scores, sparsity=1.0 - (1.0 - sparsity) ** (k / iterations))
    for t in targets:
        mask = getattr(work.get_submodule(t.module_name), t.attr + "_mask", None)
        s = scores[t.name].float()
        scores[t.name] = s if mask is None else torch.where(mask == 0, -torch.inf, s)
    return scores


def _all_ones_one_hot(model: nn.Module, ids: torch.Tensor) -> List[nn.Module]:
    """Hooks on ``model``'s embeddings: one that reads ``ids`` (the very tensor) returns the
    sum of its rows instead, as a one-hot input of all ones would. Returns the list of the
    embeddings that did so, filled during each forward."""
    read: List[nn.Module] = []

    def hook(module, args, out):
        if args and args[0] is ids:
            if module not in read:
                read.append(module)
            return module.weight.sum(0).expand_as(out)
        return None
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.register_forward_hook(hook)
    return read