"""Estimators: how a TicketSearch's evidence becomes one score per weight.

Evidence a search collects in one training run (nothing else is ever trained):

* the random-subset searches, folded by the rule (:mod:`bingo.rules`);
* the gradient proxies (:mod:`bingo.proxies`): fisher, reset, movement;
* the most recent training batches (``search.calibration_batch()``), on which the
  network with any candidate mask can be measured exactly, as the searches do.

Named estimators (higher = more important for all of them):

=============== ===========================================================================
``search``      the rule's scores alone (the paper's significance when rule="paper")
``magnitude``   |w|
``fisher``      ½ F̄ w²: OBD's estimate of the loss increase when w is pruned to zero
``reset``       Σ |g (r - w)|: the first-order size of the search's reset, summed over steps
``movement``    -Σ g w: pushed away from zero by training (Sanh et al.)
``mag+<proxy>`` the average of the global ranks of |w| and of fisher/reset/movement
``units``       needs granularity="neuron": the lowest-scoring units of each hidden layer
                removed whole (a share measured on the calibration batches), the other
                weights ranked by magnitude
``calibrated``  the default: every proxy and mixture above, each with its layer budgets
                moved until the measured calibration loss stops falling, and the one with
                the lowest loss kept; its scores realize those budgets at the sparsity
                asked for and scale them at any other
=============== ===========================================================================

The searches measure what a candidate mask really costs; what they cannot do is resolve
a quarter of a million separate numbers, so they decide the few things that matter
most: which proxy to trust, and how much each layer can lose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import torch
from torch.func import functional_call

if TYPE_CHECKING:
    from .search import TicketSearch

Scores = Dict[str, torch.Tensor]
PROXY_ESTIMATORS = ("magnitude", "fisher", "reset", "movement")
MIXTURES = ("mag+fisher", "mag+reset", "mag+movement")
ESTIMATORS = ("calibrated", "search", *PROXY_ESTIMATORS, *MIXTURES, "units")
DEFAULT_ESTIMATOR = "calibrated"
DEFAULT_CALIBRATION_SPARSITY = 0.9
UNIT_SHARES = (0.0, 0.1, 0.2, 0.3, 0.5)  # shares of hidden units "units" tries removing


@dataclass
class Calibration:
    """What the calibrated estimator measured: each candidate's loss on the calibration
    batches with its best layer budgets, and the winner."""

    sparsity: float
    examples: int
    losses: Dict[str, float] = field(default_factory=dict)
    budgets: Dict[str, Dict[str, float]] = field(default_factory=dict)
    chosen: str = ""
    evaluations: int = 0


def estimate(search: "TicketSearch", name: str = DEFAULT_ESTIMATOR, *,
             sparsity: Optional[float] = None) -> Scores:
    """Scores of every target of ``search`` by the estimator ``name`` (see module doc)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (the share of weights you "
                         f"will prune), got {sparsity}")
    if name == "search":
        return search.rule_significance()
    if name == "units":
        return _units(search, sparsity or DEFAULT_CALIBRATION_SPARSITY)
    if name == "calibrated":
        return _calibrated(search, sparsity or DEFAULT_CALIBRATION_SPARSITY)
    return _candidates(search, [name])[name]


# ---------------------------------------------------------------- proxies and mixtures
def _weights(search: "TicketSearch") -> Scores:
    params = dict(search.model.named_parameters())
    return {t.name: params[t.name].detach() for t in search.targets}


def proxy_scores(search: "TicketSearch") -> Dict[str, Scores]:
    """The four single-proxy estimators, float32 and shaped like the weights."""
    if search.proxies.steps == 0 and search.step_count > 0:
        raise ValueError("the gradient proxies saw no step: call search.step() after "
                         "loss.backward() and optimizer.step(), before zero_grad()")
    weights = _weights(search)
    out: Dict[str, Scores] = {k: {} for k in PROXY_ESTIMATORS}
    for i, t in enumerate(search.targets):
        w = weights[t.name].float()
        sums = search.proxies.sums[i]
        out["magnitude"][t.name] = w.abs()
        out["fisher"][t.name] = 0.5 * search.proxies.mean_fisher(i).float().to(w.device) * w * w
        out["reset"][t.name] = sums["reset"].float().to(w.device)
        out["movement"][t.name] = sums["movement"].float().to(w.device)
    return out


def global_ranks(scores: Scores) -> Scores:
    """Each score replaced by its rank among all scored weights, in [0, 1)."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    ranks = torch.empty_like(flat)
    ranks[torch.sort(flat, stable=True).indices] = torch.arange(
        flat.numel(), dtype=flat.dtype, device=flat.device) / flat.numel()
    pieces = torch.split(ranks, [scores[n].numel() for n in names])
    return {n: p.view(scores[n].shape) for n, p in zip(names, pieces)}


def _candidates(search: "TicketSearch", names: Sequence[str]) -> Dict[str, Scores]:
    single = proxy_scores(search)
    out = {n: single[n] for n in names if n in single}
    mixed = [n for n in names if n in MIXTURES]
    if mixed:
        mag = global_ranks(single["magnitude"])
        for n in mixed:
            other = global_ranks(single[n.split("+", 1)[1]])
            out[n] = {k: 0.5 * (mag[k] + other[k]) for k in mag}
    return out


# ---------------------------------------------------------------- measuring masks
class _Meter:
    """The calibration loss of the borrowed model with weights zeroed by per-layer counts
    along fixed orders (lowest score first); the model itself is never written."""

    def __init__(self, search: "TicketSearch"):
        from .search import _Borrowed
        self.search = search
        self.inputs, self.labels = search.calibration_batch()
        self.weights = _weights(search)
        self.borrowed = _Borrowed(search.model, [w.device for w in self.weights.values()])
        self.evaluations = 0

    def loss(self, ranks: Dict[str, torch.Tensor], pruned: Dict[str, int]) -> float:
        """``ranks[name]``: each weight's place in its layer's ascending score order."""
        overrides = {name: torch.where(ranks[name] >= pruned[name], w, torch.zeros_like(w))
                     for name, w in self.weights.items()}
        with self.borrowed, torch.no_grad():
            out = functional_call(self.search.model, overrides, (self.inputs,))
            value = float(self.search.loss_fn(out, self.labels))
        self.evaluations += 1
        return value if value == value else float("inf")  # NaN counts as worst


def layer_ranks(scores: Scores) -> Dict[str, torch.Tensor]:
    """Each weight's rank (0 = lowest score) within its own tensor, shaped like it."""
    out = {}
    for n, s in scores.items():
        rank = torch.empty(s.numel(), dtype=torch.int64, device=s.device)
        rank[torch.sort(s.reshape(-1).float(), stable=True).indices] = torch.arange(
            s.numel(), device=s.device)
        out[n] = rank.view(s.shape)
    return out


def _global_counts(scores: Scores, sparsity: float) -> Dict[str, int]:
    """Per-layer pruned counts of a global ranking at ``sparsity``."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    k = round(sparsity * flat.numel())
    pruned = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    pruned[torch.sort(flat, stable=True).indices[:k]] = True
    pieces = torch.split(pruned, [scores[n].numel() for n in names])
    return {n: int(p.sum()) for n, p in zip(names, pieces)}


def balance_budgets(meter: _Meter, scores: Scores, sparsity: float) -> tuple:
    """Per-layer pruned counts with the measured loss as low as moving weight budget
    between pairs of layers can make it (the total stays round(sparsity * n)): start at
    the global ranking's split, try every move of ``step`` weights from one layer to
    another, keep the best improving one, halve the step when none improves."""
    ranks = layer_ranks(scores)
    sizes = {n: s.numel() for n, s in scores.items()}
    pruned = _global_counts(scores, sparsity)
    best = meter.loss(ranks, pruned)
    total = sum(pruned.values())
    step, smallest = max(1, total // 20), max(1, total // 2000)
    while step >= smallest:
        move = None
        for a in pruned:
            for b in pruned:
                d = min(step, pruned[a], sizes[b] - pruned[b])
                if a == b or d <= 0:
                    continue
                trial = dict(pruned)
                trial[a] -= d
                trial[b] += d
                value = meter.loss(ranks, trial)
                if value < best - 1e-7:
                    best, move = value, trial
        if move is None:
            step //= 2
        else:
            pruned = move
    return pruned, best


def budget_scores(scores: Scores, pruned: Dict[str, int]) -> Scores:
    """Scores whose global ranking prunes exactly ``pruned[name]`` weights of each layer at
    the total of ``pruned`` (and scales those budgets at other sparsities): each weight's
    within-layer rank fraction divided by its layer's budget."""
    out = {}
    for name, rank in layer_ranks(scores).items():
        budget = max(pruned[name], 1e-3)
        out[name] = (rank.double() + 0.5) / budget
    return out


def _calibrated(search: "TicketSearch", sparsity: float) -> Scores:
    meter = _Meter(search)
    report = Calibration(sparsity, len(meter.labels))
    best_name, best_loss, best = "", float("inf"), None
    for name, scores in _candidates(search, PROXY_ESTIMATORS + MIXTURES).items():
        pruned, value = balance_budgets(meter, scores, sparsity)
        report.losses[name] = value
        report.budgets[name] = {n: pruned[n] / scores[n].numel() for n in pruned}
        if value < best_loss:
            best_name, best_loss, best = name, value, budget_scores(scores, pruned)
    report.chosen, report.evaluations = best_name, meter.evaluations
    search.last_calibration = report
    return _like_params(search, best)


# ---------------------------------------------------------------- units
def _units(search: "TicketSearch", sparsity: float) -> Scores:
    if search.granularity != "neuron":
        raise ValueError("the 'units' estimator ranks whole units by neuron searches: build the "
                         "TicketSearch with granularity='neuron' (reset_to='zero' and "
                         "rule='contrast' measure what removing a unit costs)")
    meter = _Meter(search)
    magnitude = proxy_scores(search)["magnitude"]
    unit_scores = search.unit_significance()
    best, best_loss = None, float("inf")
    for share in UNIT_SHARES:
        alive = surviving_units(search, unit_scores, share)
        scores = {n: torch.where(alive[n], magnitude[n] + 1.0, magnitude[n] * 0.0)
                  for n in magnitude}  # weights of removed units rank below every survivor
        value = meter.loss(layer_ranks(scores), _global_counts(scores, sparsity))
        if value < best_loss:
            best, best_loss = scores, value
    return _like_params(search, best)


def surviving_units(search: "TicketSearch", unit_scores: Dict[str, torch.Tensor],
                    share: float) -> Dict[str, torch.Tensor]:
    """Bool masks of the weights' shape: False on the rows of the ``share`` lowest-scoring
    units of each target but the last (whose units are the network's outputs)."""
    out = {}
    for i, t in enumerate(search.targets):
        u = unit_scores[t.name].reshape(-1)
        alive = torch.ones(t.units, dtype=torch.bool, device=u.device)
        if i < len(search.targets) - 1:
            alive[torch.sort(u.float(), stable=True).indices[:int(share * t.units)]] = False
        out[t.name] = t.expand_units(alive)
    return out


def _like_params(search: "TicketSearch", scores: Scores) -> Scores:
    weights = _weights(search)
    return {n: s.to(device=weights[n].device, dtype=torch.float32).contiguous()
            for n, s in scores.items()}
