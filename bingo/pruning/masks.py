"""One-shot pruning by score: lowest first, to a sparsity or down to an accuracy floor.

Masks are applied through ``torch.nn.utils.prune`` (``custom_from_mask``), so
``prune.is_pruned(model)`` and ``prune.remove(module, name)`` work as usual.
Weights already masked by an earlier prune count as pruned first.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..engine.targets import refresh_masked_reads

SCOPES = ("global", "layer")
Evaluate = Callable[[nn.Module], float]


@dataclass
class LayerReport:
    """One tensor after a prune: its size, the weights its mask removes (``pruned``), the
    weights that are exactly zero in the tensor the forward uses (``zeros``: the masked
    ones and any kept weight that is 0, e.g. after ``bingo.refit``), and
    ``sparsity = zeros / numel``."""

    numel: int
    pruned: int
    zeros: int
    sparsity: float


@dataclass
class PruneReport:
    """What a prune did: per-layer and total sparsity (the zeros really in the weights,
    counted, not the mask's share), accuracy (or, under a loss ceiling, the loss) before
    and after."""

    sparsity: float
    layers: Dict[str, LayerReport]
    accuracy_before: Optional[float] = None
    accuracy_after: Optional[float] = None
    min_accuracy: Optional[float] = None
    max_loss: Optional[float] = None
    loss_before: Optional[float] = None
    loss_after: Optional[float] = None
    evaluations: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict:
        return asdict(self)

    def recount(self, model: nn.Module, names: Optional[Sequence[str]] = None
                ) -> "PruneReport":
        """Count the zeros of ``names`` (default: the layers reported) in ``model`` again,
        e.g. after ``bingo.refit`` changed kept weights (some come out exactly 0: inputs
        that are zero on every example it solved on); returns itself."""
        self.layers = count_zeros(model, list(self.layers) if names is None else names)
        numel = sum(layer.numel for layer in self.layers.values())
        self.sparsity = sum(layer.zeros for layer in self.layers.values()) / numel
        return self


def count_zeros(model: nn.Module, names: Sequence[str]) -> Dict[str, LayerReport]:
    """Per named tensor of ``model``: its size, the weights its ``torch.nn.utils.prune``
    mask removes (0 without one) and the weights exactly zero in the tensor the forward
    multiplies by (``weight_orig * weight_mask`` once pruned)."""
    out = {}
    for name in names:
        module, attr = _owner(model, name)
        mask = getattr(module, attr + "_mask", None)
        if mask is None:
            weight, pruned = getattr(module, attr), 0
        else:  # what the next forward computes, whatever is cached
            weight, pruned = getattr(module, attr + "_orig") * mask, int((mask == 0).sum())
        zeros = int((weight == 0).sum())
        out[name] = LayerReport(weight.numel(), pruned, zeros, zeros / weight.numel())
    return out


def _owner(model: nn.Module, name: str) -> tuple:
    """(module, attribute) of a parameter name such as ``"fc1.weight"``."""
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name), attr


class _Scored:
    """A scored tensor: its owner module, the tensor masks multiply, and its scores."""

    def __init__(self, model: nn.Module, name: str, score: torch.Tensor):
        module_name, _, attr = name.rpartition(".")
        try:
            self.module = model.get_submodule(module_name)
        except AttributeError:
            raise KeyError(f"scores name {name!r} but the model has no module {module_name!r}") from None
        self.name, self.attr = name, attr
        existing = getattr(self.module, attr + "_mask", None)
        self.storage = getattr(self.module, attr + "_orig" if existing is not None else attr, None)
        if not isinstance(self.storage, torch.Tensor):
            raise KeyError(f"scores name {name!r} but the model has no such parameter")
        if score.shape != self.storage.shape:
            raise ValueError(f"scores for {name!r} have shape {tuple(score.shape)}, the parameter "
                             f"{tuple(self.storage.shape)}")
        flat = score.detach().reshape(-1).to(device=self.storage.device, dtype=torch.float64)
        if torch.isnan(flat).any():
            raise ValueError(f"scores for {name!r} contain NaN; fix the scorer before pruning")
        if existing is not None:  # already-pruned weights go first
            flat = torch.where(existing.reshape(-1) == 0, torch.full_like(flat, -torch.inf), flat)
        self.score = flat
        self.order: Optional[torch.Tensor] = None  # ascending score order, for scope="layer"

    @property
    def numel(self) -> int:
        return self.score.numel()


def _masks_at(items: List[_Scored], sparsity: Union[float, Mapping[str, float]], scope: str,
              global_order: Optional[torch.Tensor]) -> List[torch.Tensor]:
    """Keep-masks (1 = kept) pruning exactly round(sparsity * n) lowest scores (per layer
    when ``sparsity`` maps each tensor to its own)."""
    if isinstance(sparsity, Mapping):
        return [_layer_mask(i, sparsity[i.name]) for i in items]
    if scope == "global":
        total = sum(i.numel for i in items)
        keep = torch.ones(total, dtype=torch.bool, device=global_order.device)
        keep[global_order[:round(sparsity * total)]] = False
        pieces = torch.split(keep, [i.numel for i in items])
        return [p.to(i.storage.device) for p, i in zip(pieces, items)]
    return [_layer_mask(i, sparsity) for i in items]


def _layer_mask(item: _Scored, sparsity: float) -> torch.Tensor:
    keep = torch.ones(item.numel, dtype=torch.bool, device=item.score.device)
    keep[item.order[:round(sparsity * item.numel)]] = False
    return keep


def _evaluate_masked(model: nn.Module, items: List[_Scored], masks: List[torch.Tensor],
                     evaluate: Evaluate) -> float:
    """Accuracy with the masks applied temporarily; the weights are restored after."""
    saved = [i.storage.detach().clone() for i in items]
    try:
        with torch.no_grad():
            for i, m in zip(items, masks):
                i.storage.mul_(m.view(i.storage.shape).to(i.storage.dtype))
        return float(evaluate(model))
    finally:
        with torch.no_grad():
            for i, s in zip(items, saved):
                i.storage.copy_(s)


def prune(model: nn.Module, scores: Mapping[str, torch.Tensor], *,
          sparsity: Union[float, Mapping[str, float], None] = None,
          min_accuracy: Optional[float] = None, max_loss: Optional[float] = None,
          evaluate: Optional[Evaluate] = None, scope: str = "global",
          tolerance: float = 1e-3) -> PruneReport:
    """Prune the lowest-scoring weights of ``model`` in one shot.

    Args:
        scores: {parameter name: tensor of its shape}, higher = more important
            (e.g. ``TicketSearch.significance()``).
        sparsity: prune exactly ``round(sparsity * n)`` weights (of all scored
            weights, or of each layer with ``scope="layer"``); or a mapping
            {parameter name: its own sparsity} (layer budgets, e.g. smart ratios).
        min_accuracy: instead, find the largest sparsity whose ``evaluate(model)``
            stays >= min_accuracy, by bisection to ``tolerance`` (about
            log2(1/tolerance) evaluations); assumes accuracy falls as sparsity rises.
        max_loss: instead, a ceiling: the largest sparsity whose ``evaluate(model)``, then
            a loss (a language model's validation loss), stays <= max_loss; assumes the
            loss rises with sparsity.
        evaluate: ``evaluate(model) -> accuracy`` on held-out (validation) data (a loss
            with max_loss); needed for a floor or ceiling, optional otherwise (fills the
            report).
        scope: "global" ranks all scored weights together; "layer" prunes each
            layer to the same sparsity.
    """
    start = time.perf_counter()
    if sum(g is not None for g in (sparsity, min_accuracy, max_loss)) != 1:
        raise ValueError("give exactly one of sparsity= (a fraction of weights to prune), "
                         "min_accuracy= (an accuracy floor to prune down to) or max_loss= (a "
                         "loss ceiling)")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    per_layer = isinstance(sparsity, Mapping)
    for value in (sparsity.values() if per_layer else [sparsity] if sparsity is not None else []):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"sparsity must lie in [0, 1] (the fraction of weights pruned), "
                             f"got {value}")
    if per_layer and set(sparsity) != set(scores):
        raise ValueError(f"per-layer sparsity must name exactly the scored tensors: missing "
                         f"{sorted(set(scores) - set(sparsity))}, unknown "
                         f"{sorted(set(sparsity) - set(scores))}")
    if min_accuracy is not None and evaluate is None:
        raise ValueError("min_accuracy needs evaluate=: a function model -> validation accuracy")
    if max_loss is not None and evaluate is None:
        raise ValueError("max_loss needs evaluate=: a function model -> validation loss")
    if not scores:
        raise ValueError("scores is empty: there is nothing to prune; pass {parameter name: scores}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must lie in (0, 1), got {tolerance}")

    items = [_Scored(model, name, s) for name, s in scores.items()]
    order = None
    if scope == "global" and not per_layer:
        allscores = torch.cat([i.score.to(items[0].score.device) for i in items])
        order = torch.sort(allscores, stable=True).indices
    else:
        for i in items:
            i.order = torch.sort(i.score, stable=True).indices

    report = PruneReport(sparsity=0.0, layers={}, min_accuracy=min_accuracy, max_loss=max_loss)
    loss = max_loss is not None  # evaluate gives a loss
    if evaluate is not None:
        setattr(report, "loss_before" if loss else "accuracy_before", float(evaluate(model)))
    if min_accuracy is not None or loss:
        sparsity = _bisect(model, items, scope, order, evaluate,
                           max_loss if loss else min_accuracy, tolerance, report, loss)

    masks = _masks_at(items, sparsity, scope, order)
    for i, m in zip(items, masks):
        torch_prune.custom_from_mask(i.module, i.attr, m.view(i.storage.shape))
    refresh_masked_reads(model)
    report.recount(model, [i.name for i in items])
    if evaluate is not None:
        setattr(report, "loss_after" if loss else "accuracy_after", float(evaluate(model)))
    report.seconds = time.perf_counter() - start
    return report


def _bisect(model, items, scope, order, evaluate, bound, tolerance, report, loss) -> float:
    """Largest sparsity (to ``tolerance``) whose masked accuracy stays >= ``bound`` (its
    loss <= ``bound`` with ``loss``)."""
    def value_at(s: float) -> float:
        return _evaluate_masked(model, items, _masks_at(items, s, scope, order), evaluate)

    dense = report.loss_before if loss else report.accuracy_before
    return bisect_sparsity(value_at, bound, dense, tolerance, report.evaluations,
                           kind="loss" if loss else "accuracy")


def bisect_sparsity(value_at: Callable[[float], float], bound: float, dense_value: float,
                    tolerance: float, evaluations: List[Dict[str, float]],
                    kind: str = "accuracy") -> float:
    """Largest sparsity in [0, 1] (to ``tolerance``) with ``value_at(s) >= bound`` (an
    accuracy floor, assumed to fall as sparsity rises) or, with ``kind="loss"``,
    ``value_at(s) <= bound`` (a loss ceiling, assumed to rise); each evaluation is appended
    to ``evaluations`` as {"sparsity", kind}. Refuses a bound the unpruned model
    (``dense_value``) misses."""
    if kind not in ("accuracy", "loss"):
        raise ValueError(f"kind must be 'accuracy' or 'loss', got {kind!r}")

    def ok(s: float) -> bool:
        value = float(value_at(s))
        evaluations.append({"sparsity": s, kind: value})
        return value <= bound if kind == "loss" else value >= bound

    if kind == "accuracy" and dense_value < bound:
        raise ValueError(
            f"unreachable accuracy threshold: the unpruned model already scores "
            f"{dense_value:.4f} < min_accuracy {bound:.4f} on the evaluation data; "
            f"lower min_accuracy (or train longer)")
    if kind == "loss" and not dense_value <= bound:
        raise ValueError(
            f"unreachable loss ceiling: the unpruned model's loss is already {dense_value:.4f} "
            f"> max_loss {bound:.4f} on the evaluation data; raise max_loss (or train longer)")
    lo, hi = 0.0, 1.0
    if ok(hi):
        return hi
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Enforce keep-masks {parameter name: bool tensor of its shape} through
    torch.nn.utils.prune (combined with any mask already there)."""
    for name, keep in masks.items():
        module, attr = _owner(model, name)
        torch_prune.custom_from_mask(module, attr, keep.to(getattr(module, attr).device, torch.bool))
    refresh_masked_reads(model)


def current_masks(model: nn.Module, names) -> Dict[str, torch.Tensor]:
    """The keep-masks in force on ``names`` (all True for a tensor never pruned)."""
    out = {}
    for name in names:
        module, attr = _owner(model, name)
        mask = getattr(module, attr + "_mask", None)
        out[name] = (mask != 0).clone() if mask is not None else \
            torch.ones_like(getattr(module, attr), dtype=torch.bool)
    return out


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies a pruned model: ``torch.nn.utils.prune`` keeps the
    masked weight as a computed tensor, which deepcopy refuses; it is copied detached (the
    next forward recomputes it from ``weight_orig`` and ``weight_mask`` anyway)."""
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not v.is_leaf}
    return copy.deepcopy(model, memo)
