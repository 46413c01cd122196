"""Measuring a mask exactly: the calibration loss of the borrowed model with weights
zeroed by per-layer counts along fixed orders, on the search's kept examples, the model
itself never written (``Meter``); on a chain (an ``nn.Sequential`` of layers or of blocks:
an MLP, ResNet-20, char-gpt) a trial resumes from the kept activation entering the first
block it changes (``Prefixes``). A search spanning
ranks measures the mean over every rank's kept examples (``Ranks.mean``), so every rank
measures the same number and takes the same decision."""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call

from ..engine.batched import chain_children, plain_sequential
from ..engine.borrow import Borrowed
from ..engine.targets import Target
from .candidates import Scores, stable_order, weights_of

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
        self.blocks = target_chain(search.model, search.targets)
        self._prefixes = Prefixes(self.blocks) if self.blocks is not None else None
        self._last_grad = None  # (keep-masks, loss, gradients) of the last loss_and_grad

    def loss(self, ranks: Dict[str, torch.Tensor], pruned: Dict[str, int]) -> float:
        """``ranks[name]``: each weight's place in its layer's ascending score order. On a
        chain (:func:`target_chain`) the activations entering each block that holds
        targets are kept for the pruned counts of the targets before it (``Prefixes``):
        most trials of a budget search change two layers, so the blocks before the first
        of them need not run again."""
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
        return self._measured(value)

    def loss_at(self, keep: Dict[str, torch.Tensor]) -> float:
        """The loss with the weights outside ``keep`` zeroed, as ``loss_and_grad`` computes
        it (the same products, the same value), at a forward's cost: a swap search's trial,
        whose gradient is needed only if the trial is kept."""
        with self.borrowed, torch.no_grad():
            out = functional_call(self.search.model, self._zeroed(keep), (self.inputs,))
            value = float(self.search.loss_fn(out, self.labels))
        return self._measured(value)

    def _zeroed(self, keep: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The weights with those outside ``keep`` zeroed (new tensors)."""
        return {n: w * keep[n].to(w.dtype) for n, w in self.weights.items()}

    def _measured(self, value: float) -> float:
        """One evaluation counted; the mean over every rank's kept examples; NaN as worst."""
        self.evaluations += 1
        value = self.search.ranks.mean(value, len(self.labels))
        return value if value == value else float("inf")

    def loss_and_grad(self, keep: Dict[str, torch.Tensor]) -> tuple:
        """The loss with the weights outside ``keep`` zeroed, and its gradient with respect
        to every weight (pruned ones included) at that point. Gradients go to substituted
        tensors, never to the parameters' ``.grad``. Asked again at the masks of the last
        call (a budget search that halved its step without a move: 3-6 of its 8 calls on
        char-gpt), it returns that call's values (not to be written) without measuring."""
        last = self._last_grad
        if last is not None and last[0].keys() == keep.keys() \
                and all(torch.equal(last[0][n], keep[n]) for n in keep):
            return last[1], last[2]
        overrides = {n: w.requires_grad_(True) for n, w in self._zeroed(keep).items()}
        with self.borrowed, torch.enable_grad():
            out = functional_call(self.search.model, overrides, (self.inputs,))
            loss = self.search.loss_fn(out, self.labels)
            grads = torch.autograd.grad(loss, list(overrides.values()))
        self.evaluations += 1
        ranks, n = self.search.ranks, len(self.labels)
        value = ranks.mean(float(loss.detach()), n)
        grads = ranks.mean_tensors(dict(zip(overrides, grads)), n)
        value = value if value == value else float("inf")
        self._last_grad = ({k: m.clone() for k, m in keep.items()}, value, grads)
        return value, grads


Block = Tuple[str, nn.Module, Tuple[Target, ...]]  # name, module, the targets inside it


def target_chain(model: nn.Module, targets: Sequence[Target]) -> Optional[List[Block]]:
    """The model as the chain of blocks it runs (an ``nn.Sequential`` that keeps
    Sequential's own forward, nested ones without hooks flattened), each with the targets
    inside it; None if the model is not one, or its own hooks must run, or a target lies
    outside the chain."""
    if not plain_sequential(model):
        return None
    left = list(targets)
    blocks: List[Block] = []
    for name, m in chain_children(model):
        inside = tuple(t for t in left if t.module_name == name
                       or t.module_name.startswith(name + "."))
        left = [t for t in left if t not in inside]
        blocks.append((name, m, inside))
    return None if left else blocks


class Prefixes:
    """A chain's activations entering each block that holds targets, kept by the pruned
    counts of the targets before it, for one ranking at a time (a new ``ranks`` clears
    them), least recently used dropped past PREFIX_BYTES. A kept activation is reused only
    while its version counter is unchanged, so a block that writes its input in place
    cannot hand a stale one on. The same operations in the same order as a whole forward:
    the same losses, bit for bit."""

    def __init__(self, blocks: Sequence[Block]):
        self.blocks = list(blocks)
        self.cuts = []  # (block index, the target names before it) per block with targets
        before: list = []
        for i, (_, _, inside) in enumerate(self.blocks):
            if inside:
                self.cuts.append((i, tuple(before)))
                before.extend(t.name for t in inside)
        self.kept: "OrderedDict[tuple, Tuple[torch.Tensor, int]]" = OrderedDict()
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
            entry = self.kept.get(keys[i])
            if entry is not None and _version(entry[0]) == entry[1]:
                start, h, resumed = i, entry[0], i
                self.kept.move_to_end(keys[i])
                self.resumed += 1
                break
        for i in range(start, len(self.blocks)):
            name, m, inside = self.blocks[i]
            if not inside:
                h = m(h)
                continue
            if i != resumed:
                self._keep(keys[i], h)
            h = functional_call(m, {t.name[len(name) + 1:]: masked(t.name) for t in inside},
                                (h,))
        return h

    def _keep(self, key: tuple, h: torch.Tensor) -> None:
        version = _version(h)
        if version is None:  # an inference tensor: no version counter to trust
            return
        self.kept[key] = (h, version)
        total = sum(x.numel() * x.element_size() for x, _ in self.kept.values())
        while total > PREFIX_BYTES and len(self.kept) > 1:
            _, (old, _) = self.kept.popitem(last=False)
            total -= old.numel() * old.element_size()


def _version(h: torch.Tensor) -> Optional[int]:
    try:
        return h._version
    except RuntimeError:
        return None


def layer_ranks(scores: Scores) -> Dict[str, torch.Tensor]:
    """Each weight's rank (0 = lowest score) within its own tensor, shaped like it."""
    out = {}
    for n, s in scores.items():
        rank = torch.empty(s.numel(), dtype=torch.int64, device=s.device)
        rank[stable_order(s.reshape(-1).float())] = torch.arange(s.numel(), device=s.device)
        out[n] = rank.view(s.shape)
    return out
