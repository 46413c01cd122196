"""Measuring a mask exactly: the calibration loss of the borrowed model with weights
zeroed by per-layer counts along fixed orders, on the search's kept examples, the model
itself never written (``Meter``); on a chain of layers a trial resumes from the kept
activation entering the first target layer it changes (``Prefixes``). A search spanning
ranks measures the mean over every rank's kept examples (``Ranks.mean``), so every rank
measures the same number and takes the same decision."""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Dict

import torch
from torch.func import functional_call

from ..engine.batched import sequential_layers
from ..engine.borrow import Borrowed
from .candidates import Scores, weights_of

if TYPE_CHECKING:
    from ..engine.search import SearchEngine

PREFIX_BYTES = 256 << 20  # activations a budget search keeps between its trials


class Meter:
    """The calibration loss of the borrowed model with weights zeroed by per-layer counts
    along fixed orders (lowest score first); the model itself is never written."""

    def __init__(self, search: "SearchEngine"):
        self.search = search
        self.inputs, self.labels = search.calibration_batch()
        self.weights = weights_of(search)
        self.borrowed = Borrowed(search.model, [w.device for w in self.weights.values()],
                                 batch_stats=True)  # BatchNorm as after recalibration
        self.evaluations = 0
        self.layers = sequential_layers(search.model, search.targets)
        self._prefixes = Prefixes(self.layers) if self.layers is not None else None

    def loss(self, ranks: Dict[str, torch.Tensor], pruned: Dict[str, int]) -> float:
        """``ranks[name]``: each weight's place in its layer's ascending score order. On a
        chain of layers (``batched.sequential_layers``) the activations entering each
        target layer are kept for the pruned counts of the targets before it
        (``Prefixes``): most trials of a budget search change two layers, so the layers
        before the first of them need not run again."""
        def masked(name: str) -> torch.Tensor:
            w = self.weights[name]
            return torch.where(ranks[name] >= pruned[name], w, torch.zeros_like(w))
        with self.borrowed, torch.no_grad():
            if self._prefixes is None:
                out = functional_call(self.search.model, {n: masked(n) for n in self.weights},
                                      (self.inputs,))
            else:
                out = self._prefixes.forward(self.inputs, ranks, pruned, masked)
            value = float(self.search.loss_fn(out, self.labels))
        self.evaluations += 1
        value = self.search.ranks.mean(value, len(self.labels))
        return value if value == value else float("inf")  # NaN counts as worst

    def loss_and_grad(self, keep: Dict[str, torch.Tensor]) -> tuple:
        """The loss with the weights outside ``keep`` zeroed, and its gradient with respect
        to every weight (pruned ones included) at that point. Gradients go to substituted
        tensors, never to the parameters' ``.grad``."""
        overrides = {n: (w * keep[n].to(w.dtype)).requires_grad_(True)
                     for n, w in self.weights.items()}
        with self.borrowed, torch.enable_grad():
            out = functional_call(self.search.model, overrides, (self.inputs,))
            loss = self.search.loss_fn(out, self.labels)
            grads = torch.autograd.grad(loss, list(overrides.values()))
        self.evaluations += 1
        ranks, n = self.search.ranks, len(self.labels)
        value = ranks.mean(float(loss.detach()), n)
        grads = ranks.mean_tensors(dict(zip(overrides, grads)), n)
        return (value if value == value else float("inf")), grads


class Prefixes:
    """A chain's activations entering each target layer, kept by the pruned counts of the
    targets before it, for one ranking at a time (a new ``ranks`` clears them), least
    recently used dropped past PREFIX_BYTES. A kept activation is only ever read by the
    target layer that follows it, so an in-place layer cannot change it. The same
    operations in the same order as a whole forward: the same losses, bit for bit."""

    def __init__(self, layers):
        self.layers = layers
        self.cuts = []  # (layer index, the target names before it) per target layer
        before: list = []
        for i, (_, _, t) in enumerate(layers):
            if t is not None:
                self.cuts.append((i, tuple(before)))
                before.append(t.name)
        self.kept: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self.ranks = None
        self.resumed = 0  # forwards that started from a kept activation

    def forward(self, inputs: torch.Tensor, ranks: Dict[str, torch.Tensor],
                pruned: Dict[str, int], masked) -> torch.Tensor:
        if ranks is not self.ranks:
            self.kept.clear()
            self.ranks = ranks
        keys = {i: (i,) + tuple(pruned[n] for n in names) for i, names in self.cuts}
        start, h, resumed = 0, inputs, None
        for i, _ in reversed(self.cuts):
            if keys[i] in self.kept:
                start, h, resumed = i, self.kept[keys[i]], i
                self.kept.move_to_end(keys[i])
                self.resumed += 1
                break
        for i in range(start, len(self.layers)):
            _, m, t = self.layers[i]
            if t is None:
                h = m(h)
                continue
            if i != resumed:
                self._keep(keys[i], h)
            h = functional_call(m, {t.attr: masked(t.name)}, (h,))
        return h

    def _keep(self, key: tuple, h: torch.Tensor) -> None:
        self.kept[key] = h
        total = sum(x.numel() * x.element_size() for x in self.kept.values())
        while total > PREFIX_BYTES and len(self.kept) > 1:
            _, old = self.kept.popitem(last=False)
            total -= old.numel() * old.element_size()


def layer_ranks(scores: Scores) -> Dict[str, torch.Tensor]:
    """Each weight's rank (0 = lowest score) within its own tensor, shaped like it."""
    out = {}
    for n, s in scores.items():
        rank = torch.empty(s.numel(), dtype=torch.int64, device=s.device)
        rank[torch.sort(s.reshape(-1).float(), stable=True).indices] = torch.arange(
            s.numel(), device=s.device)
        out[n] = rank.view(s.shape)
    return out
