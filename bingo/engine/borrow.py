"""Borrowing the user's model for a measurement: eval mode and the RNG state saved on
entry and restored on exit, so a search or an event leaves nothing of the user's changed.

``batch_stats=True`` (the measured estimators' ``Meter``; the gradual events keep the
running statistics, which training keeps current): BatchNorm layers
normalize by the measured batch's own statistics and leave their running buffers alone.
Why: after a large cut the running statistics belong to the dense network; measured with
them, every 90% mask of a trained ResNet-20 scored the chance loss ln 10, so the
measurement could not tell candidates apart. A one-shot prune then re-estimates the
statistics on the same kept examples (``bingo.recalibrate_batchnorm``), so what was
measured is what the pruned network computes."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn


def batchnorm_layers(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


class Borrowed:
    """Puts the model in eval mode and saves the RNG state; restores both on exit. With
    ``batch_stats``, BatchNorm layers use the batch's statistics, their buffers untouched."""

    def __init__(self, model: nn.Module, devices: Sequence[torch.device],
                 batch_stats: bool = False):
        self.model = model
        self.cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
        self.batch_stats = batch_stats

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = [torch.cuda.get_rng_state(i) for i in self.cuda]
        self.model.eval()
        self.norms = batchnorm_layers(self.model) if self.batch_stats else []
        for bn in self.norms:  # training + not tracking: batch statistics, no buffer update
            bn.training, bn.track_running_stats = True, False
        return self

    def __exit__(self, *exc):
        for bn in self.norms:
            bn.track_running_stats = True
        for m, training in self.modes:
            m.training = training
        torch.set_rng_state(self.cpu_rng)
        for i, s in zip(self.cuda, self.cuda_rng):
            torch.cuda.set_rng_state(s, i)
        return False
