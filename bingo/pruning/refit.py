"""Least-squares refit after one-shot pruning: the kept weights of each pruned layer are
solved in closed form so that its outputs on a few examples match the dense network's.

Why: on LeNet-300-100 trained with SGD, one-shot pruning to 90% stays 1.2 points below
dense whatever the mask (docs/results.md, *LeNet-SGD*); no mask choice closes it, while
changing the weights that stay does. This is the layer-wise reconstruction of OBS-style
one-shot pruners (e.g. SparseGPT): no gradient step, no labels, the masks unchanged.

Layer by layer, in the order the forward pass reaches them, each pruned ``Linear`` or
``Conv2d`` (one holding a ``weight_mask`` from ``torch.nn.utils.prune``) gets, per output
row r with kept inputs S, the ridge solution of

    min  || X_S w_S + b - Y_r ||^2 + ridge * mean(diag(G_SS)) * ||(w_S, b)||^2

where X is the layer's input in the pruned network (fed by the layers already refit), Y
the same layer's output in the reference (dense) network, G = [X, 1]^T [X, 1]. A Conv2d
is solved on its unfolded patches, so each output channel is one row. Sums are
accumulated in float64 over batches, so the examples never need to fit at once.

Matching outputs is not the task's loss, and on the conv net under SGD it raised the
loss of the calibrated masks; given the examples' labels, the refit is kept only where
the loss on them falls (``bingo prune --refit`` and ``bingo compare --refit`` pass them).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.losses import cross_entropy
from ..engine.targets import torch_pruned
from .masks import Evaluate, PruneReport, bisect_sparsity, copy_model, prune

DEFAULT_RIDGE = 1e-3  # of the mean kept diagonal; 1e-4 or 1e-2 moved LeNet-SGD's refit
                      # test accuracies by at most 0.10 pt (docs/results.md)
REFIT_TYPES = (nn.Linear, nn.Conv2d)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LayerRefit:
    """One layer's fit: residual sum of squares over the reference outputs' total sum of
    squares about their means (1 - R^2), with its weights before and after the refit."""

    error_before: float
    error_after: float
    rows: int           # rows of the fit: examples x output positions


@dataclass
class RefitReport:
    layers: Dict[str, LayerRefit] = field(default_factory=dict)
    examples: int = 0
    ridge: float = DEFAULT_RIDGE
    accuracy_before: Optional[float] = None  # pruned, not refit (when evaluate is given)
    accuracy_after: Optional[float] = None
    loss_before: Optional[float] = None      # on the examples (when labels are given)
    loss_after: Optional[float] = None       # the refit's, kept or not
    kept: bool = True                        # False: the refit raised the loss, undone
    seconds: float = 0.0

    def to_dict(self) -> Dict:
        return asdict(self)


class _Stop(Exception):
    """Raised by a capture hook once it has what it needs: the rest of the forward is skipped."""


def capture(model: nn.Module, module: nn.Module, x: torch.Tensor, want: str) -> torch.Tensor:
    """``module``'s input (``want="input"``) or output on ``x``, the forward cut short there."""
    seen: List[torch.Tensor] = []

    def hook(_mod, inputs, output):
        seen.append(inputs[0] if want == "input" else output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"the forward pass never reached layer {module!r}: refit needs every "
                         f"refit layer to run on the examples; pass layers= without it")
    return seen[0]


def input_rows(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A Linear's or Conv2d's input as rows [n, in features] that its weight, viewed as
    [out, in features], multiplies (a Conv2d's as unfolded patches)."""
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding,
                           module.stride)                        # [N, C*kh*kw, L]
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return inputs.reshape(-1, inputs.shape[-1])


def _rows(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor
          ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fit's design rows [n, in features] and targets [n, out features]."""
    if isinstance(module, nn.Conv2d):
        return input_rows(module, inputs), outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1])
    return input_rows(module, inputs), outputs.reshape(-1, outputs.shape[-1])


def _layers(model: nn.Module, reference: nn.Module, names: Optional[Sequence[str]],
            probe: torch.Tensor) -> List[str]:
    """The names of the layers to refit, in the order the forward pass reaches them."""
    modules = dict(model.named_modules())
    if names is None:
        names = [n for n, m in modules.items()
                 if isinstance(m, REFIT_TYPES) and torch_pruned(m, "weight")]
        if not names:
            raise ValueError("the model has no pruned Linear or Conv2d layer (none holds a "
                             "weight_mask): prune it first (bingo.prune), then refit")
    reference_modules = dict(reference.named_modules())
    for n in names:
        m = modules.get(n)
        if not isinstance(m, REFIT_TYPES):
            raise ValueError(f"layer {n!r} is not a Linear or Conv2d of the model; refit "
                             f"solves only those")
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
            raise ValueError(f"layer {n!r} is a grouped or non-zero-padded Conv2d, which "
                             f"refit does not solve; pass layers= without it")
        r = reference_modules.get(n)
        if type(r) is not type(m) or r.weight.shape != m.weight.shape:
            raise ValueError(f"the reference has no {type(m).__name__} {n!r} of weight shape "
                             f"{tuple(m.weight.shape)}: pass the dense model the pruned one "
                             f"was copied from")
    return forward_order(model, names, probe, "refit needs every refit layer to run on the "
                                             "examples; pass layers= without them")


def forward_order(model: nn.Module, names: Sequence[str], probe: torch.Tensor,
                  hint: str) -> List[str]:
    """The modules ``names`` in the order ``model``'s forward on ``probe`` reaches them;
    a module never reached is refused, the error ending with ``hint``."""
    modules = dict(model.named_modules())
    order: List[str] = []
    hooks = [modules[n].register_forward_hook(lambda *_, n=n: order.append(n)) for n in names]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n in names if n not in order]
    if missing:
        raise ValueError(f"the forward pass never reached {missing}: {hint}")
    return list(dict.fromkeys(order))


def _storage(module: nn.Module) -> torch.Tensor:
    """The tensor that holds a layer's weights: ``weight_orig`` once pruned."""
    return getattr(module, "weight_orig", module.weight)


def _normal_equations(model: nn.Module, module: nn.Module, reference: nn.Module,
                      target: nn.Module, name: str, examples: torch.Tensor,
                      batch_size: int) -> tuple:
    """Over the examples, in batches: the Gram matrix of ``module``'s input rows in
    ``model`` (a ones column appended for the bias), their cross terms with ``target``'s
    outputs in ``reference``, the outputs' sums of squares and sums (float64), and the
    row count."""
    device = next(model.parameters()).device
    sums: Optional[List[torch.Tensor]] = None
    rows = 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            x = examples[i:i + batch_size].to(device)
            a, y = _rows(module, capture(model, module, x, "input"),
                         capture(reference, target, x, "output"))
            if not (torch.isfinite(a).all() and torch.isfinite(y).all()):
                raise ValueError(f"layer {name!r} sees inf or NaN on the examples; refit "
                                 f"needs finite activations")
            if module.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
            a, y = a.to(torch.float64), y.to(torch.float64)
            parts = [a.T @ a, a.T @ y, (y * y).sum(0), y.sum(0)]
            sums = parts if sums is None else [s + p for s, p in zip(sums, parts)]
            rows += len(a)
    return (*sums, rows)


def _solve(module: nn.Module, gram: torch.Tensor, rhs: torch.Tensor, yy: torch.Tensor,
           ridge: float) -> Tuple[torch.Tensor, Optional[torch.Tensor], float, float]:
    """Per output row, the ridge solution over its kept inputs (and the bias). Returns the
    new weight and bias and the residual sums of squares before and after."""
    storage = _storage(module)
    weight = storage.detach().to(torch.float64).reshape(storage.shape[0], -1).clone()
    mask = getattr(module, "weight_mask", torch.ones_like(storage)).reshape(weight.shape) != 0
    has_bias = module.bias is not None
    bias = module.bias.detach().to(torch.float64).clone() if has_bias else None
    ones = torch.ones(1, dtype=torch.bool, device=mask.device)
    before = after = 0.0
    for r in range(weight.shape[0]):
        kept = (torch.cat([mask[r], ones]) if has_bias else mask[r]).nonzero().squeeze(1)
        g, b = gram[kept][:, kept], rhs[kept, r]
        old = torch.cat([weight[r], bias[r:r + 1]])[kept] if has_bias else weight[r, kept]
        before += float(old @ g @ old - 2 * old @ b + yy[r])
        if not len(kept):
            after += float(yy[r])
            continue
        damped = g + ridge * g.diagonal().mean().clamp_min(1e-12) * torch.eye(
            len(kept), dtype=g.dtype, device=g.device)
        new = torch.linalg.solve(damped, b)
        after += float(new @ g @ new - 2 * new @ b + yy[r])
        if has_bias:
            weight[r, kept[:-1]], bias[r] = new[:-1], new[-1]
        else:
            weight[r, kept] = new
    return weight.reshape(storage.shape), bias, before, after


def _loss(model: nn.Module, examples: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn,
          batch_size: int) -> float:
    """The mean loss over the examples, in batches."""
    device = next(model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            x, y = examples[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
            total += float(loss_fn(model(x), y)) * len(x)
    return total / len(examples)


def refit(model: nn.Module, reference: nn.Module, examples: torch.Tensor, *,
          ridge: float = DEFAULT_RIDGE, layers: Optional[Sequence[str]] = None,
          batch_size: int = 512, evaluate: Optional[Evaluate] = None,
          labels: Optional[torch.Tensor] = None,
          loss_fn: LossFn = cross_entropy) -> RefitReport:
    """Refit the kept weights and biases of ``model``'s pruned layers in place, so that
    each layer's outputs on ``examples`` match ``reference``'s (see the module doc).

    Args:
        model: the pruned network (masks from ``torch.nn.utils.prune``, e.g. ``bingo.prune``);
            its masks are unchanged, its kept weights and biases rewritten.
        reference: the network before pruning (same module names and shapes); untouched.
        examples: a batch of inputs (no labels), e.g. ``TicketSearch.calibration_batch()[0]``.
        ridge: damping, as a share of the mean kept diagonal of each row's Gram matrix.
        layers: module names to refit (default: every Linear/Conv2d holding a weight_mask).
        evaluate: ``evaluate(model) -> accuracy``, to fill the report before and after.
        labels: the examples' labels: the refit is then kept only if ``loss_fn`` on the
            examples falls, and undone otherwise (``report.kept``). Matching each layer's
            outputs is not the task's loss: on the conv net under SGD it raised the loss
            of the calibrated masks (docs/results.md, *One-shot pruning with a refit*).
    """
    start = time.perf_counter()
    if not isinstance(examples, torch.Tensor) or examples.ndim < 1 or len(examples) == 0:
        raise ValueError("examples must be a non-empty batch of inputs, e.g. "
                         "TicketSearch.calibration_batch()[0]")
    if not torch.isfinite(examples).all():
        raise ValueError("examples contain inf or NaN; pass finite inputs")
    if not (ridge > 0 and ridge < float("inf")):
        raise ValueError(f"ridge must be a finite number > 0 (the damping; default "
                         f"{DEFAULT_RIDGE}), got {ridge}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels is not None and len(labels) != len(examples):
        raise ValueError(f"labels must match the examples one to one: {len(labels)} labels "
                         f"for {len(examples)} examples")
    modes = [(m, m.training) for m in (model, reference)]
    model.eval(), reference.eval()
    device = next(model.parameters()).device
    report = RefitReport(examples=len(examples), ridge=ridge)
    saved: List[Tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, its value), to undo
    try:
        names = _layers(model, reference, layers, examples[:1].to(device))
        if evaluate is not None:
            report.accuracy_before = float(evaluate(model))
        if labels is not None:
            report.loss_before = _loss(model, examples, labels, loss_fn, batch_size)
        modules, reference_modules = dict(model.named_modules()), dict(reference.named_modules())
        for name in names:
            m = modules[name]
            for t in (_storage(m), m.bias):
                if t is not None:
                    saved.append((t, t.detach().clone()))
        for name in names:
            module = modules[name]
            gram, rhs, yy, ysum, rows = _normal_equations(
                model, module, reference, reference_modules[name], name, examples, batch_size)
            weight, bias, before, after = _solve(module, gram, rhs, yy, ridge)
            total = float((yy - ysum * ysum / rows).sum()) or 1.0
            with torch.no_grad():
                _storage(module).copy_(weight.to(_storage(module).dtype))
                if bias is not None:
                    module.bias.copy_(bias.to(module.bias.dtype))
            report.layers[name] = LayerRefit(before / total, after / total, rows)
        if labels is not None:
            report.loss_after = _loss(model, examples, labels, loss_fn, batch_size)
            report.kept = report.loss_after < report.loss_before
            if not report.kept:
                _restore(saved)
        if evaluate is not None:
            report.accuracy_after = float(evaluate(model))
    except BaseException:  # a refused or failed refit leaves the model as it was
        _restore(saved)
        raise
    finally:
        for m, training in modes:
            m.train(training)
        with torch.no_grad():  # the masked weight as the next forward will compute it
            for m in model.modules():
                if isinstance(m, REFIT_TYPES) and torch_pruned(m, "weight"):
                    m.weight = m.weight_orig * m.weight_mask
    report.seconds = time.perf_counter() - start
    return report


def _restore(saved: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for t, value in saved:
            t.copy_(value)


def prune_and_refit(model: nn.Module, scores: Mapping[str, torch.Tensor],
                    examples: torch.Tensor, *, sparsity=None,
                    min_accuracy: Optional[float] = None, evaluate: Optional[Evaluate] = None,
                    scope: str = "global", ridge: float = DEFAULT_RIDGE,
                    labels: Optional[torch.Tensor] = None,
                    tolerance: float = 1e-3) -> Tuple[PruneReport, RefitReport]:
    """``bingo.prune`` then ``refit`` against the unpruned model, in place (with
    ``labels``, kept only if it lowers the loss on the examples). With ``min_accuracy``
    the bisection measures refit networks (one refit of a copy per evaluation), so the
    floor holds after the refit. The PruneReport's accuracies are the mask's alone; the
    RefitReport's, after the refit. The PruneReport's sparsity counts the zeros after the
    refit: a kept weight whose input is zero on every example (a unit dead on all of them)
    is solved to exactly 0 (60 and 103 of LeNet-300-100's in ``bingo prune --sparsity 0.9
    --refit``, Adam and SGD)."""
    fit = dict(ridge=ridge, labels=labels, evaluate=evaluate)
    reference = copy_model(model)
    if min_accuracy is not None:
        if evaluate is None:
            raise ValueError("min_accuracy needs evaluate=: a function model -> validation "
                             "accuracy")

        def accuracy_at(s: float) -> float:
            trial = copy_model(reference)
            prune(trial, scores, sparsity=s, scope=scope)
            return refit(trial, reference, examples, **fit).accuracy_after

        evaluations: List[Dict[str, float]] = []
        sparsity = bisect_sparsity(accuracy_at, min_accuracy, float(evaluate(reference)),
                                   tolerance, evaluations)
    report = prune(model, scores, sparsity=sparsity, evaluate=evaluate, scope=scope)
    if min_accuracy is not None:
        report.min_accuracy, report.evaluations = min_accuracy, evaluations
    fitted = refit(model, reference, examples, **fit)
    return report.recount(model), fitted

