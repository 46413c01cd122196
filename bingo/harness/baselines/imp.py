"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019, 'lottery tickets').

Train; prune a share of the remaining weights by magnitude; rewind the kept weights
to their values at initialization (or at step k of the first run); retrain with the
mask enforced; repeat. Per layer (the output layer at half the rate, as in the paper)
or globally. Rounds follow the geometric schedule of the rate, with the caller's
target sparsities inserted exactly; after the last target, given a floor, they go on
until the first round whose validation accuracy falls below it. Each round records the
caller's figures (validation and test accuracy, or a text run's validation loss).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ...engine.targets import Target, select_targets
from ...pruning.masks import prune
from .scores import magnitude_scores

TrainFn = Callable[..., object]        # train_fn(model, after_step=None) trains in place
FiguresFn = Callable[[nn.Module], Dict[str, float]]  # e.g. {"val_accuracy": ..., ...}


@dataclass
class IMPRound:
    round: int
    sparsity: float          # of the prunable weights, after this round's pruning
    figures: Dict[str, float]  # what the caller's ``figures`` measured after the round
    seconds: float           # this round's wall time (prune, rewind, retrain, evaluate)

    @property
    def val_accuracy(self) -> float:
        if "val_accuracy" not in self.figures:
            raise ValueError(f"this IMP run measured {sorted(self.figures)}, not val_accuracy")
        return self.figures["val_accuracy"]

    def record(self) -> Dict[str, float]:
        """The round as one flat JSON row."""
        return {"round": self.round, "sparsity": self.sparsity, **self.figures,
                "seconds": self.seconds}


def layer_sparsities(targets: Sequence[Target], overall: float, rate: float,
                     output_rate: float) -> Dict[str, float]:
    """Per-layer sparsities after r rounds (real r) of pruning ``rate`` of each hidden layer
    and ``output_rate`` of the last, with r chosen so the total is ``overall``."""
    sizes = [t.size for t in targets]
    rates = [rate] * (len(targets) - 1) + [output_rate]

    def at(r: float) -> List[float]:
        return [1.0 - (1.0 - q) ** r for q in rates]

    def total(r: float) -> float:
        return sum(n * s for n, s in zip(sizes, at(r))) / sum(sizes)

    lo, hi = 0.0, 1.0
    while total(hi) < overall:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < overall else (lo, mid)
    return {t.name: s for t, s in zip(targets, at(hi))}


def schedule(rate: float, targets: Sequence[float], limit: float = 0.999) -> List[float]:
    """Overall sparsity after each round: the geometric 1 - (1 - rate)^r, with ``targets``
    inserted, up to the last target (or ``limit`` without targets). A geometric round
    is skipped when the next target would then prune less than rate / 2 of what remains
    (0.36 -> 0.5 instead of 0.36 -> 0.488 -> 0.5)."""
    stop = max(targets) if targets else limit
    wanted = sorted(set(targets))
    points, r = set(wanted), 1
    while 1.0 - (1.0 - rate) ** r < stop - 1e-9:
        g = round(1.0 - (1.0 - rate) ** r, 6)
        after = [t for t in wanted if t > g]
        if not after or (1.0 - g) / (1.0 - after[0]) >= 1.0 + rate / 2:
            points.add(g)
        r += 1
    return sorted(p for p in points if p <= stop + 1e-9)


def _snapshot(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rewind(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Copy the saved values into the model, masks excepted (weight -> weight_orig)."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in saved.items():
            target = key if key in state else key + "_orig"  # pruned: weight -> weight_orig
            if target in state and not target.endswith("_mask"):
                state[target].copy_(value)


def imp(model: nn.Module, train_fn: TrainFn, *, figures: FiguresFn,
        sparsities: Sequence[float] = (), min_accuracy: Optional[float] = None,
        rate: float = 0.2, output_rate: Optional[float] = None, scope: str = "layer",
        rewind_step: int = 0, max_rounds: Optional[int] = None,
        on_round: Optional[Callable[[IMPRound], None]] = None) -> List[IMPRound]:
    """Run IMP on ``model`` in place; returns the rounds, round 0 being the dense run.

    ``scope="layer"`` prunes each layer by ``rate`` per round and the output layer by
    ``output_rate`` (default rate / 2); ``scope="global"`` ranks all weights together.
    ``rewind_step`` = 0 rewinds to initialization, k > 0 to the weights after step k of
    the first (dense) training run. ``max_rounds`` caps the pruning rounds (each one a
    whole training run: the budget), whatever targets are left. ``figures(model)`` is
    measured after every round;
    ``min_accuracy`` reads its ``val_accuracy``. The model ends at the last round's mask
    and weights.
    """
    if not sparsities and min_accuracy is None:
        raise ValueError("give target sparsities, or min_accuracy to prune until it would "
                         "be crossed")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must lie in (0, 1) (the share pruned per round), got {rate}")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1 (pruning rounds after the dense "
                         f"run), got {max_rounds}; None: as many as the targets need")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    output_rate = rate / 2 if output_rate is None else output_rate
    targets = select_targets(model)
    rewind_to = _snapshot(model)
    step = [0]

    def capture(x, y):
        step[0] += 1
        if step[0] == rewind_step:
            rewind_to.update(_snapshot(model))

    rounds: List[IMPRound] = []
    start = time.perf_counter()
    train_fn(model, after_step=capture if rewind_step > 0 else None)
    if 0 < rewind_step and step[0] < rewind_step:
        raise ValueError(f"rewind_step {rewind_step} is beyond the {step[0]} steps of training")
    rounds.append(IMPRound(0, 0.0, figures(model), time.perf_counter() - start))
    if on_round:
        on_round(rounds[-1])
    if min_accuracy is not None and rounds[0].val_accuracy < min_accuracy:
        raise ValueError(
            f"unreachable accuracy threshold: the dense model already scores "
            f"{rounds[0].val_accuracy:.4f} < min_accuracy {min_accuracy:.4f} on validation; "
            f"lower min_accuracy (or train longer)")
    overall_rate = rate if scope == "global" else _overall_rate(targets, rate, output_rate)
    plan = schedule(overall_rate, sorted(sparsities)) if sparsities else []
    last = 0.0
    while max_rounds is None or len(rounds) <= max_rounds:
        if plan:
            overall = plan.pop(0)
        elif min_accuracy is not None and rounds[-1].val_accuracy >= min_accuracy:
            overall = 1.0 - (1.0 - last) * (1.0 - overall_rate)  # on until the floor breaks
            if overall > 0.999:
                break
        else:
            break
        start = time.perf_counter()
        scores = magnitude_scores(model, targets)
        goal = (overall if scope == "global"
                else layer_sparsities(targets, overall, rate, output_rate))
        prune(model, scores, sparsity=goal)
        _rewind(model, rewind_to)
        train_fn(model)
        last = _sparsity(model, targets)
        rounds.append(IMPRound(len(rounds), last, figures(model), time.perf_counter() - start))
        if on_round:
            on_round(rounds[-1])
    return rounds


def _overall_rate(targets: Sequence[Target], rate: float, output_rate: float) -> float:
    """The overall share pruned by one per-layer round from dense (for the schedule)."""
    sizes = [t.size for t in targets]
    pruned = sum(sizes[:-1]) * rate + sizes[-1] * output_rate
    return pruned / sum(sizes)


def _sparsity(model: nn.Module, targets: Sequence[Target]) -> float:
    zero = total = 0
    for t in targets:
        w = getattr(model.get_submodule(t.module_name), t.attr)
        zero += int((w == 0).sum())
        total += w.numel()
    return zero / total
