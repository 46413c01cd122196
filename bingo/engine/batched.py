"""Batched evaluation: all K variants of a search step in one pass over the model.

The reference evaluates variant after variant, one full forward each. Here a
variant is one more slice of a leading batch dimension: activations are
[V, B, ...], the input is shared until the first layer that holds a target, and
each target layer asks the backend (``ops``: :mod:`bingo.engine.reference`,
:mod:`bingo.engine.cpp` or :mod:`bingo.kernels.ops`, which name these operations alike)
for its variant outputs:

* Linear: ``ops.linear_variants``. For the first target layer the input is the
  same for every variant, so the C++ backend adds a sparse correction to
  X·Wᵀ instead of doing K dense products, and the Triton one forms each weight
  tile as where(mask, W0, W) inside the matrix product;
* Conv2d: ``ops.masked_weights`` writes the K weight tensors in one pass, then one
  grouped convolution runs them all.

This fast path needs a model that is an ``nn.Sequential`` (nested ones are
flattened) of layers that act on each sample alone; any other model is evaluated
with ``torch.func.vmap`` over the K stacked weight sets, and if vmap cannot
trace it, variant by variant (the reference loop) with a one-time warning.
"""
from __future__ import annotations

import warnings
from types import ModuleType
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from . import reference
from .reference import SearchBatch, SearchPlan
from .targets import Target

# Variants evaluated in one pass, at most; fewer when one variant's widest activation is
# large, so that V of them fit ACTIVATION_BUDGET: on the 2-core machine, a conv net at
# batch 512 (9.4 MB per variant after conv1) searched K = 16 in 361 ms with 2 variants
# per pass and 564 ms with 16, while LeNet-300-100 (1.6 MB) was fastest with 16.
BATCHED_VARIANTS = 16
ACTIVATION_BUDGET = 24 << 20  # bytes

# Layers applied to [V, B, ...] as they are (they act on the last dimensions).
_AS_IS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid,
          nn.Softplus, nn.Mish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.LayerNorm, nn.Linear)
# Layers applied to [V*B, ...]: they act on each sample alone, along dimension 1 or later.
_MERGED = (nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.BatchNorm1d,
           nn.BatchNorm2d, nn.Conv1d, nn.Conv2d, nn.Dropout2d, nn.Softmax, nn.LogSoftmax)

Layer = Tuple[str, nn.Module, Optional[Target]]


def plain_sequential(m: nn.Module) -> bool:
    """An ``nn.Sequential`` that runs its children in order and nothing else: Sequential's
    own forward (a subclass may run them otherwise, e.g. with a skip connection) and no
    hooks of its own."""
    return (isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
            and not (m._forward_hooks or m._forward_pre_hooks))


def chain_children(seq: nn.Sequential, prefix: str = "") -> List[Tuple[str, nn.Module]]:
    """The modules ``seq`` runs one after another, by name: nested plain Sequentials
    flattened, anything else (a block, a hooked or own-forward Sequential) kept whole."""
    out = []
    for name, m in seq.named_children():
        full = f"{prefix}{name}"
        out += chain_children(m, full + ".") if plain_sequential(m) else [(full, m)]
    return out


def _per_sample(m: nn.Module) -> bool:
    if m._forward_hooks or m._forward_pre_hooks:
        return False
    if isinstance(m, nn.Flatten):
        return m.start_dim >= 1
    if isinstance(m, nn.Unflatten):
        return isinstance(m.dim, int) and m.dim >= 1
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return m.dim is not None and m.dim != 0
    return isinstance(m, _AS_IS + _MERGED)


def sequential_layers(model: nn.Module, targets: Sequence[Target]) -> Optional[List[Layer]]:
    """The model as a chain of per-sample layers with their targets, or None if it is not one."""
    if not plain_sequential(model):
        return None
    by_module = {t.module_name: t for t in targets}
    layers: List[Layer] = []
    for name, m in chain_children(model):
        t = by_module.pop(name, None)
        if not _per_sample(m):
            return None
        if t is not None:
            if t.attr != "weight" or not isinstance(m, (nn.Linear, nn.Conv2d)):
                return None
            if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
                return None
        layers.append((name, m, t))
    return None if by_module else layers  # every target must sit in the chain


def _merged(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    v, b = h.shape[:2]
    return m(h.flatten(0, 1)).unflatten(0, (v, b))


def _conv_variants(ops: ModuleType, plan: SearchPlan, chunk: Sequence[int], t: Target,
                   m: nn.Conv2d, h: torch.Tensor, initial: Mapping[str, torch.Tensor],
                   shared: bool) -> torch.Tensor:
    """[V, B, out, H', W'] from one grouped convolution over the K masked weight sets."""
    v = len(chunk)
    w = ops.masked_weights(plan, chunk, t, m.weight, initial[t.name])
    bias = ops.variant_bias(plan, chunk, t, m.bias, initial.get(t.bias_name))
    if bias is None and m.bias is not None:
        bias = m.bias.expand(v, -1)
    w = w.reshape((v * w.shape[1],) + tuple(w.shape[2:]))
    bias = None if bias is None else bias.reshape(-1)
    if shared and m.groups == 1:  # every variant reads the same input: one conv, V*out channels
        x, groups = h, 1
    else:
        hv = h.expand((v,) + tuple(h.shape)) if shared else h
        x, groups = hv.transpose(0, 1).flatten(1, 2), m.groups * v
    out = F.conv2d(x, w, bias, m.stride, m.padding, m.dilation, groups)
    return out.unflatten(1, (v, -1)).transpose(0, 1)


def _linear_variants(ops: ModuleType, plan: SearchPlan, chunk: Sequence[int], t: Target,
                     m: nn.Linear, h: torch.Tensor, initial: Mapping[str, torch.Tensor],
                     base: Optional[torch.Tensor]) -> torch.Tensor:
    shared = base is not None
    lead = h.shape[:-1] if shared else h.shape[1:-1]
    x = h.reshape(-1, h.shape[-1]) if shared else h.reshape(len(chunk), -1, h.shape[-1])
    if shared:
        base = base.reshape(-1, base.shape[-1])
    out = ops.linear_variants(plan, chunk, t, x, m.weight, initial[t.name], m.bias,
                              initial.get(t.bias_name), base=base)
    return out.reshape((len(chunk),) + tuple(lead) + (out.shape[-1],))


def evaluate_sequential(plan: SearchPlan, layers: Sequence[Layer],
                        initial: Mapping[str, torch.Tensor], batch: SearchBatch,
                        ops: ModuleType) -> Tuple[float, List[float]]:
    """(metric before, metric of each variant) with activations batched over variants."""
    first = next(i for i, (_, _, t) in enumerate(layers) if t is not None)
    shared = batch.inputs
    for _, m, _ in layers[:first]:
        shared = m(shared)
    h, base, widest = shared, None, 0
    for i, (_, m, _) in enumerate(layers[first:]):  # the unchanged model, layer by layer
        h = m(h)
        base = h if i == 0 else base
        widest = max(widest, h.numel() * h.element_size())
    before = float(batch.score(h.unsqueeze(0))[0])
    after: List[float] = []
    per_pass = max(1, min(BATCHED_VARIANTS, ACTIVATION_BUDGET // max(widest, 1)))
    for chunk in batch.chunks(plan, per_pass):
        h = None  # [V, B, ...] once the first target layer has run
        for _, m, t in layers[first:]:
            if t is None:
                h = m(h) if isinstance(m, _AS_IS) else _merged(m, h)
            elif isinstance(m, nn.Linear):
                h = _linear_variants(ops, plan, chunk, t, m, shared if h is None else h,
                                     initial, base if h is None else None)
            else:
                h = _conv_variants(ops, plan, chunk, t, m, shared if h is None else h,
                                   initial, shared=h is None)
        after += batch.score(h).tolist()
    return before, after


def evaluate_vmapped(plan: SearchPlan, targets: Sequence[Target],
                     current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                     batch: SearchBatch, ops: ModuleType) -> Tuple[float, List[float]]:
    """Any model: ``torch.func.vmap`` of a functional call over K stacked weight sets."""
    before = batch.evaluate({})
    after: List[float] = []

    def forward(overrides):
        return functional_call(batch.model, overrides, (batch.inputs,))

    for chunk in batch.chunks(plan, BATCHED_VARIANTS):
        stacked = {}
        for t in targets:
            stacked[t.name] = ops.masked_weights(plan, chunk, t, current[t.name], initial[t.name])
            if t.bias_name is not None and t.bias_name in initial:
                bias = ops.variant_bias(plan, chunk, t, current[t.bias_name],
                                        initial[t.bias_name])
                if bias is not None:  # None: weight granularity leaves biases alone
                    stacked[t.bias_name] = bias
        after += batch.score(vmap(forward)(stacked)).tolist()
    return before, after


_warned: set = set()


def evaluate_variants(plan: SearchPlan, targets: Sequence[Target],
                      current: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor],
                      batch: SearchBatch, ops: ModuleType) -> Tuple[float, List[float]]:
    """The fastest evaluation the model allows, on backend ``ops``; same results as the loop."""
    layers = sequential_layers(batch.model, targets)
    if layers is not None:
        return evaluate_sequential(plan, layers, initial, batch, ops)
    try:
        return evaluate_vmapped(plan, targets, current, initial, batch, ops)
    except (RuntimeError, NotImplementedError) as err:  # vmap cannot trace this model
        kind = type(batch.model).__name__
        if kind not in _warned:
            _warned.add(kind)
            warnings.warn(f"bingo: {kind} cannot be evaluated batched ({err}); searching it "
                          f"variant by variant, which is slower", RuntimeWarning, stacklevel=3)
        return reference.evaluate_variants(plan, targets, current, initial, batch,
                                           masks_fn=ops.subset_masks)
