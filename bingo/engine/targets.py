"""Which parameters a search or a pruner works on, and where they sit in the element space.

By default the prunable tensors are the weights of Linear and Conv layers;
``include`` / ``exclude`` take parameter names or shell-style patterns
(``"fc*.weight"``) to choose others. Each tensor owns a contiguous range of the
search's global element index space: its elements at weight granularity, its
output units (rows of dim 0) at neuron granularity.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn

DEFAULT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
GRANULARITIES = ("weight", "neuron")


@dataclass(frozen=True)
class Target:
    """One prunable tensor: its name, owner module, optional bias, and element range."""

    name: str           # parameter name, e.g. "fc1.weight"
    module_name: str    # owning module, e.g. "fc1"
    attr: str           # attribute on the module, e.g. "weight"
    bias_name: Optional[str]  # the owner's bias, reset with its unit at neuron granularity
    shape: torch.Size
    offset: int         # first global element index of this tensor
    size: int           # elements in the index space (numel, or rows at neuron granularity)

    @property
    def units(self) -> int:
        return self.shape[0]

    def expand_units(self, unit_values: torch.Tensor) -> torch.Tensor:
        """Broadcast a per-unit tensor over the weight's shape (row i gets value i)."""
        view = unit_values.reshape((self.units,) + (1,) * (len(self.shape) - 1))
        return view.expand(self.shape)


def torch_pruned(module: nn.Module, attr: str) -> bool:
    """Whether ``module.<attr>`` is masked through torch.nn.utils.prune (``<attr>_orig``
    and ``<attr>_mask`` on the module, the tensor itself recomputed before each forward)."""
    return hasattr(module, attr + "_orig") and hasattr(module, attr + "_mask")


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _as_list(patterns: Optional[Sequence[str] | str]) -> List[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def select_targets(model: nn.Module, *, granularity: str = "weight",
                   include: Optional[Sequence[str] | str] = None,
                   exclude: Optional[Sequence[str] | str] = None) -> List[Target]:
    """The prunable tensors of ``model`` in registration order, with their index ranges."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES} (reset single weights, "
                         f"or whole output units), got {granularity!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    include_l, exclude_l = _as_list(include), _as_list(exclude)
    modules = dict(model.named_modules())
    targets: List[Target] = []
    offset = 0
    for name, param in model.named_parameters():
        module_name, _, attr = name.rpartition(".")
        module = modules[module_name]
        if attr.endswith("_orig") and torch_pruned(module, attr[:-5]):
            attr = attr[:-5]  # pruned by torch.nn.utils.prune: the tensor is still `weight`
            name = f"{module_name}.{attr}" if module_name else attr
        if include_l:
            chosen = _matches(name, include_l)
        else:
            chosen = isinstance(module, DEFAULT_LAYER_TYPES) and attr == "weight"
        if not chosen or _matches(name, exclude_l):
            continue
        if param.dim() == 0:
            raise ValueError(f"parameter {name!r} is a scalar: there is nothing to prune in it; "
                             f"leave it out of include=")
        bias = getattr(module, "bias", None) if attr == "weight" else None
        bias_name = f"{module_name}.bias" if module_name else "bias"
        has_bias = isinstance(bias, nn.Parameter) and bias.shape[:1] == param.shape[:1]
        size = param.numel() if granularity == "weight" else param.shape[0]
        targets.append(Target(name, module_name, attr, bias_name if has_bias else None,
                              param.shape, offset, size))
        offset += size
    if not targets:
        what = f"include={include_l}" if include_l else "Linear/Conv weights"
        raise ValueError(
            f"{type(model).__name__} has nothing to prune: no parameter matched {what}"
            + (f" after exclude={exclude_l}" if exclude_l else "")
            + "; pass include=[parameter names or patterns] to choose what to prune"
        )
    return targets


# Modules whose forward reads a child's weight by attribute instead of calling the child
# (MultiheadAttention passes out_proj.weight to a functional; the encoder/decoder layers'
# inference fast path passes every child's weight): a torch.nn.utils.prune mask on such a
# child is never reapplied by the child's own forward pre-hook.
ATTRIBUTE_READERS = (nn.MultiheadAttention, nn.TransformerEncoderLayer,
                     nn.TransformerDecoderLayer)


def refresh_masked_reads(model: nn.Module) -> None:
    """Make every forward of ``model`` first recompute ``<attr> = <attr>_orig *
    <attr>_mask`` for the tensors masked through torch.nn.utils.prune inside an
    :data:`ATTRIBUTE_READERS` module, so those modules read the current weights and masks
    (and gradients reach ``<attr>_orig``). Called by everything in bingo that installs
    such masks; once per model (a flag on it), and nothing for models without readers.
    The hook works on the module it is called on, so a deep copy refreshes its own."""
    if getattr(model, "_bingo_masked_reads", False) or not any(
            isinstance(m, ATTRIBUTE_READERS) for m in model.modules()):
        return
    model.register_forward_pre_hook(_refresh)
    model._bingo_masked_reads = True


def _refresh(root: nn.Module, _inputs: object) -> None:
    inside = {id(m): m for r in root.modules() if isinstance(r, ATTRIBUTE_READERS)
              for m in r.modules()}
    for module in inside.values():
        for name in list(module._parameters):
            attr = name[:-len("_orig")]
            if name.endswith("_orig") and torch_pruned(module, attr):  # not after remove()
                setattr(module, attr, module._parameters[name] * getattr(module, attr + "_mask"))
