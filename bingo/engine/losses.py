"""The default loss of every search, refit and training loop: cross-entropy with the
classes on the last dimension, so a classifier's [B, C] logits and a sequence model's
[B, T, C] next-token logits take the same function (the mean over every position); and
each example's own loss under any loss function (``per_example``)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``outputs`` [..., C] against integer ``targets`` [...]."""
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def is_cross_entropy(loss_fn) -> bool:
    """Whether ``loss_fn`` is a cross-entropy the batched scoring can evaluate in one call."""
    return loss_fn is cross_entropy or loss_fn is F.cross_entropy


def per_example(loss_fn: Callable, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Each example's loss (a sequence's: the mean over its positions), float64:
    cross-entropy in one call, another loss by ``torch.func.vmap`` over the examples, or,
    where vmap cannot trace it (a model output with non-tensor fields), one call per
    example; a loss that cannot take a batch of one raises its own error."""
    if is_cross_entropy(loss_fn) and isinstance(outputs, torch.Tensor):
        per = F.cross_entropy(outputs.flatten(0, -2), labels.flatten(), reduction="none")
        return per.view(len(labels), -1).mean(1).double()

    def single(o: Any, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(_tensors(lambda t: t.unsqueeze(0), o), y.unsqueeze(0))

    try:
        per = torch.func.vmap(single)(outputs, labels)
    except Exception:  # not traceable: one call per example, the same values
        per = torch.stack([loss_fn(_tensors(lambda t: t[i:i + 1], outputs), labels[i:i + 1])
                           for i in range(len(labels))])
    return per.reshape(len(labels)).double()


def _tensors(fn: Callable, tree: Any) -> Any:
    """``fn`` on every tensor in ``tree`` (a tensor, a tuple, a model output), the rest kept."""
    return tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, tree)
