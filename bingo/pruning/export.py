"""Structured export: a physically smaller network with the same outputs as a pruned one.

After pruning (by units, or so far that whole rows empty out), a hidden unit or channel
is dead when every weight into it is zero (it outputs the constant act(bias)) or every
weight out of it is zero (nothing reads it). :func:`shrink` removes dead units from an
``nn.Sequential`` of Linear / Conv2d layers separated by elementwise activations,
pooling and Flatten, folding each constant output into the next layer's bias, so the
small model's outputs equal the masked model's (to float rounding). The original model
is not changed.
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU,
               nn.Identity, nn.Dropout)
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class ExportReport:
    """Units removed per layer, and parameter counts before and after."""

    removed: Dict[str, int] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    nonzero_after: int = 0


def _plain(module: nn.Module) -> nn.Module:
    """A copy with any pruning masks baked in (no torch.nn.utils.prune hooks)."""
    if isinstance(module, nn.Linear):
        out = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    elif isinstance(module, nn.Conv2d):
        out = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                        stride=module.stride, padding=module.padding, dilation=module.dilation,
                        groups=module.groups, bias=module.bias is not None,
                        padding_mode=module.padding_mode)
    else:
        return copy.deepcopy(module)
    with torch.no_grad():  # .weight / .bias are the effective (masked) tensors
        out.weight.copy_(module.weight)
        if module.bias is not None:
            out.bias.copy_(module.bias)
    return out.to(device=module.weight.device, dtype=module.weight.dtype)


def _apply_activation(between: List[nn.Module], value: torch.Tensor) -> torch.Tensor:
    """What the modules between two layers do to a constant channel/unit value."""
    for m in between:
        if isinstance(m, ELEMENTWISE):
            value = m(value)
    return value


def shrink(model: nn.Sequential) -> tuple[nn.Sequential, ExportReport]:
    """The smaller model and what was removed (see the module docstring)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"shrink works on an nn.Sequential, got {type(model).__name__}; "
                        f"export the Sequential part of your model")
    names = list(model._modules)
    layers = [_plain(m) for m in model._modules.values()]
    report = ExportReport(params_before=sum(p.numel() for p in model.parameters()))
    weighted = [i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d))]
    for i in weighted:
        if not isinstance(layers[i], (nn.Linear, nn.Conv2d)):
            raise TypeError(f"{names[i]}: only Linear and Conv2d layers can be shrunk")
    for a, b in zip(weighted[:-1], weighted[1:]):
        between = layers[a + 1:b]
        for m in between:
            if not isinstance(m, ELEMENTWISE + POOLS + (nn.Flatten,)):
                raise TypeError(f"{names[a]} -> {names[b]}: cannot see through "
                                f"{type(m).__name__}; shrink handles elementwise "
                                f"activations, pooling and Flatten between layers")
        report.removed[names[a]] = _remove_dead(layers[a], layers[b], between)
    small = nn.Sequential(OrderedDict(zip(names, layers)))
    report.params_after = sum(p.numel() for p in small.parameters())
    report.nonzero_after = sum(int((p != 0).sum()) for p in small.parameters())
    return small, report


def _remove_dead(producer: nn.Module, consumer: nn.Module, between: List[nn.Module]) -> int:
    """Remove the dead output units of ``producer`` (in place on both modules)."""
    w = producer.weight.detach()
    units = w.shape[0]
    bias = producer.bias.detach() if producer.bias is not None else torch.zeros(units, device=w.device)
    cw = consumer.weight.detach()
    # consumer input columns per producer unit (Flatten after a conv: H*W columns each)
    per_unit = cw.shape[1] // units
    if cw.shape[1] % units:
        raise ValueError("the consumer's inputs do not divide into the producer's units")
    if isinstance(consumer, nn.Conv2d) and (consumer.padding != (0, 0) or consumer.groups != 1):
        return 0  # a constant input is not constant at padded borders: keep every unit
    cols = cw.reshape(cw.shape[0], units, -1) if isinstance(consumer, nn.Linear) else cw
    no_input = (w.reshape(units, -1) == 0).all(dim=1)
    no_output = (cols.transpose(0, 1).reshape(units, -1) == 0).all(dim=1)
    dead = no_input | no_output
    if not bool(dead.any()):
        return 0
    keep = ~dead
    constant = _apply_activation(between, bias.clone())  # a no-input unit's output
    fold = torch.zeros(cw.shape[0], dtype=cw.dtype, device=cw.device)
    for u in torch.nonzero(no_input & ~no_output).flatten().tolist():
        fold += cols[:, u].reshape(cw.shape[0], -1).sum(dim=1) * constant[u]
    with torch.no_grad():
        _take_rows(producer, keep)
        if isinstance(consumer, nn.Linear):
            idx = torch.nonzero(keep.repeat_interleave(per_unit)).flatten()
            consumer.weight = nn.Parameter(cw[:, idx].clone())
            consumer.in_features = int(idx.numel())
        else:
            consumer.weight = nn.Parameter(cw[:, keep].clone())
            consumer.in_channels = int(keep.sum())
        if consumer.bias is None:
            consumer.bias = nn.Parameter(fold)
        else:
            consumer.bias = nn.Parameter(consumer.bias.detach() + fold)
    return int(dead.sum())


def _take_rows(m: nn.Module, keep: torch.Tensor) -> None:
    m.weight = nn.Parameter(m.weight.detach()[keep].clone())
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias.detach()[keep].clone())
    if isinstance(m, nn.Linear):
        m.out_features = int(keep.sum())
    else:
        m.out_channels = int(keep.sum())


def inference_seconds(model: nn.Module, inputs: torch.Tensor, repeats: int = 20,
                      warmup: int = 3) -> float:
    """Median wall time of one forward pass on ``inputs`` (eval mode, no grad)."""
    was = model.training
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    model.train(was)
    return sorted(times)[len(times) // 2]

