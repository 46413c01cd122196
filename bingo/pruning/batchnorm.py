"""BatchNorm statistics after a one-shot prune: re-estimated on a few examples.

A one-shot cut changes every layer's outputs, but a BatchNorm layer keeps normalizing
them by the running mean and variance of the dense network. On ResNet-20 at 90% that
alone put every mask at chance accuracy. Re-estimating the statistics is a forward pass
over a few training examples: no gradient step, no labels, no weight changed (as the
least-squares refit, it counts as one shot without retraining). The measured estimators
score masks the same way (``Borrowed(batch_stats=True)``: each BatchNorm normalized by
the kept examples' own statistics), so a mask is deployed as it was measured.

After a kept least-squares refit the dense statistics stay (``after_one_shot``): the
refit solves each layer's kept weights to give the dense network's outputs, which those
statistics normalize. Measured on ResNet-20 (CIFAR-10, 15 epochs, seed 0, 90%,
magnitude's mask, 1,024 kept images): refit alone 68.06% test, refit then re-estimated
47.74%, re-estimated without a refit 50.09% (docs/results.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch
from torch import nn

from ..engine.borrow import Borrowed, batchnorm_layers

if TYPE_CHECKING:
    from .refit import RefitReport


def recalibrate_batchnorm(model: nn.Module, examples: torch.Tensor,
                          batch_size: int = 256) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them on ``examples``
    (the average of each chunk of ``batch_size``'s statistics: with one chunk, the
    examples' exact mean and unbiased variance). The rest of the model's state, its
    modes and the RNG are left as they were. Returns the number of layers re-estimated
    (0, model untouched, when it has none)."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    if not isinstance(examples, torch.Tensor) or examples.dim() == 0 or len(examples) < 2:
        raise ValueError("recalibrate_batchnorm needs a batch of at least 2 examples "
                         "(a tensor with the examples on its first dimension); pass "
                         "training inputs, e.g. search.calibration_batch()[0]")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    momenta = [bn.momentum for bn in layers]
    device = layers[0].running_mean.device
    try:
        with Borrowed(model, [device]), torch.no_grad():
            for bn in layers:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the chunks
                bn.train()
            chunks = list(examples.split(batch_size))
            if len(chunks) > 1 and len(chunks[-1]) == 1:  # one example has no variance
                chunks[-2:] = [torch.cat(chunks[-2:])]
            for chunk in chunks:
                model(chunk.to(device))
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
    return len(layers)


def recalibrating(evaluate: Callable[[nn.Module], float],
                  examples: torch.Tensor) -> Callable[[nn.Module], float]:
    """``evaluate`` preceded by ``recalibrate_batchnorm(model, examples)``: a floor's
    bisection on a BatchNorm model then measures each trial sparsity as it will be
    deployed, not with the dense network's statistics (the re-estimate starts from a reset
    each time, so the trials do not depend on each other)."""
    def measured(model: nn.Module) -> float:
        recalibrate_batchnorm(model, examples)
        return evaluate(model)
    return measured


def after_one_shot(model: nn.Module, examples: torch.Tensor,
                   fit: Optional["RefitReport"] = None) -> int:
    """What a one-shot prune does to BatchNorm: re-estimate the statistics on
    ``examples``, unless ``fit`` is a kept refit (then the dense statistics stay). Returns
    the layers re-estimated (0 when none was)."""
    if fit is not None and fit.kept:
        return 0
    return recalibrate_batchnorm(model, examples)
