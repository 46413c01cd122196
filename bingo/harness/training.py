"""The training loop every method shares, and accuracy evaluation."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, batches

StepHook = Callable[[torch.Tensor, torch.Tensor], None]
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainStats:
    steps: int
    seconds: float       # wall time of the whole loop, hooks included
    hook_seconds: float  # of which in the after-step hook (e.g. the ticket search)
    final_loss: float


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, or SGD with (heavy-ball) momentum; ``weight_decay`` is L2 added to the
    gradient (He et al.'s CIFAR recipe: SGD, momentum 0.9, 1e-4 to 5e-4)."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def lr_factor(schedule: str, total_steps: int):
    """The learning rate's factor at each step: 1 (``constant``), or a cosine from 1 down
    to 0 over the run (``cosine``, stepped after every optimizer step)."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of "
                     f"{LR_SCHEDULES}")


def steps_per_epoch(split: Split, batch_size: int) -> int:
    """Optimizer steps in one epoch of ``train`` (the last batch may be short)."""
    return math.ceil(len(split) / batch_size)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 2048) -> float:
    """Top-1 accuracy on a split, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for x, y in batches(split, batch_size, shuffle=False):
            correct += int((model(x).argmax(-1) == y).sum())
        return correct / len(split)
    finally:
        model.train(was_training)


def train(model: nn.Module, split: Split, *, epochs: int, batch_size: int,
          optimizer: torch.optim.Optimizer, seed: int = 0,
          after_step: Optional[StepHook] = None, progress: bool = True,
          description: str = "train", lr_schedule: str = "constant") -> TrainStats:
    """Plain supervised training with cross-entropy; ``after_step(x, y)`` runs after each
    optimizer step (BINGO's search hooks in here), and the learning rate follows
    ``lr_schedule`` over the run. Raises on a non-finite loss."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    total = epochs * steps_per_epoch(split, batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(lr_schedule, total))
    generator = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=description,
                   unit="step", disable=not sys.stderr.isatty(), leave=False)
    model.train()
    start, hook_seconds, steps, loss_value = time.perf_counter(), 0.0, 0, float("nan")
    try:
        for _ in range(epochs):
            for x, y in batches(split, batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"training loss became {loss_value} at step {steps}; lower the "
                        f"learning rate")
                loss.backward()
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    t = time.perf_counter()
                    after_step(x, y)
                    hook_seconds += time.perf_counter() - t
                steps += 1
                if bar is not None:
                    bar.update()
                    if steps % 50 == 0:
                        bar.set_postfix(loss=f"{loss_value:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return TrainStats(steps, time.perf_counter() - start, hook_seconds, loss_value)
