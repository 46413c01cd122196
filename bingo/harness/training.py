"""The training loop every method shares, and evaluation (accuracy for images, the mean
next-character loss for text)."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..engine.distributed import Ranks
from ..engine.losses import cross_entropy
from ..pruning.gradual import GradualPruning
from ..pruning.schedule import ScheduledPruning
from .data import Split, batches

StepHook = Callable[[torch.Tensor, torch.Tensor], None]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "warmup-cosine")
WARMUP_SHARE = 0.05  # warmup-cosine: the linear warm-up's share of the steps
MIN_LR_SHARE = 0.1   # warmup-cosine: the cosine ends at this share of the peak (nanoGPT)


@dataclass
class TrainStats:
    steps: int
    seconds: float       # wall time of the whole loop, hooks included
    hook_seconds: float  # of which in the after-step hook (e.g. the ticket search)
    final_loss: float


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam, AdamW, or SGD with (heavy-ball) momentum; ``weight_decay`` is L2 added to the
    gradient for Adam and SGD (He et al.'s CIFAR recipe: SGD, momentum 0.9, 1e-4 to 5e-4)
    and decoupled for AdamW (nanoGPT: on every tensor of two or more dimensions, the
    matrices and embeddings, none on biases and LayerNorms; betas 0.9, 0.99)."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        params = list(params)
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.99))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def lr_factor(schedule: str, total_steps: int):
    """The learning rate's factor at each step (stepped after every optimizer step): 1
    (``constant``); a cosine from 1 down to 0 over the run (``cosine``); or a linear
    warm-up over the first WARMUP_SHARE of the steps, then a cosine down to MIN_LR_SHARE
    (``warmup-cosine``, nanoGPT's shape)."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "warmup-cosine":
        warm = max(1, round(WARMUP_SHARE * total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            done = min(1.0, (step - warm) / max(1, total_steps - warm))
            return MIN_LR_SHARE + (1 - MIN_LR_SHARE) * 0.5 * (1.0 + math.cos(math.pi * done))
        return factor
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of "
                     f"{LR_SCHEDULES}")


def steps_per_epoch(split, batch_size: int) -> int:
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


@torch.no_grad()
def mean_loss(model: nn.Module, split, batch_size: int = 256,
              loss_fn: LossFn = cross_entropy) -> float:
    """The mean loss per predicted position over a split's unshuffled batches (for text:
    every window once), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for x, y in batches(split, batch_size, shuffle=False):
            total += float(loss_fn(model(x), y)) * y.numel()
            count += y.numel()
        return total / count
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split, metric: str) -> float:
    """A split's ``accuracy`` (higher is better) or ``loss`` (lower is better)."""
    if metric == "accuracy":
        return accuracy(model, split)
    if metric == "loss":
        return mean_loss(model, split)
    raise ValueError(f"unknown metric {metric!r}; choose accuracy or loss")


def train(model: nn.Module, split, *, epochs: int, batch_size: int,
          optimizer: torch.optim.Optimizer, seed: int = 0,
          after_step: Optional[StepHook] = None, progress: bool = True,
          description: str = "train", lr_schedule: str = "constant",
          loss_fn: LossFn = cross_entropy) -> TrainStats:
    """Plain supervised training with ``loss_fn`` (cross-entropy over the last dimension:
    classes, or next characters); ``after_step(x, y)`` runs after each optimizer step
    (BINGO's search hooks in here), and the learning rate follows ``lr_schedule`` over
    the run. Raises on a non-finite loss.

    Under ``torch.distributed`` (``torchrun``) every rank draws the same global batches
    from ``seed``, trains on its slice of each (rank r: the r-th of W near-equal parts)
    through DistributedDataParallel, which averages the gradients, and hands the hook its
    slice: the same run as one process on the global batches, within float tolerance.
    A gradual pruner (or a fine-tune ramp, ``GradualPruning``) as ``after_step`` tracks
    ``optimizer`` (``ScheduledPruning.track``: the pruned weights' optimizer state zeroed
    at each event, the same run faster)."""
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
    if isinstance(after_step, (ScheduledPruning, GradualPruning)) \
            and after_step.optimizer is None:
        after_step.track(optimizer)
    model.train()
    ranks = Ranks()
    net = model
    if ranks.active:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)
    start, hook_seconds, steps, loss_value = time.perf_counter(), 0.0, 0, float("nan")
    try:
        for _ in range(epochs):
            for x, y in batches(split, batch_size, generator):
                x, y = ranks.slice(x, y)  # spanning ranks, this rank's slice
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(x), y)
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
