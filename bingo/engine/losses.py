"""The default loss of every search, refit and training loop: cross-entropy with the
classes on the last dimension, so a classifier's [B, C] logits and a sequence model's
[B, T, C] next-token logits take the same function (the mean over every position)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``outputs`` [..., C] against integer ``targets`` [...]."""
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def is_cross_entropy(loss_fn) -> bool:
    """Whether ``loss_fn`` is a cross-entropy the batched scoring can evaluate in one call."""
    return loss_fn is cross_entropy or loss_fn is F.cross_entropy
