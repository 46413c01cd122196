"""Borrowing the user's model for a measurement: eval mode and the RNG state saved on
entry and restored on exit, so a search or an event leaves nothing of the user's changed."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Borrowed:
    """Puts the model in eval mode and saves the RNG state; restores both on exit."""

    def __init__(self, model: nn.Module, devices: Sequence[torch.device]):
        self.model = model
        self.cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = [torch.cuda.get_rng_state(i) for i in self.cuda]
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, training in self.modes:
            m.training = training
        torch.set_rng_state(self.cpu_rng)
        for i, s in zip(self.cuda, self.cuda_rng):
            torch.cuda.set_rng_state(s, i)
        return False
