"""The calibrated estimator's search for a mask, measured on the kept examples: layer
budgets moved between pairs of layers while the loss falls (``balance_budgets``), then
swaps of single weights in and out of the mask, each measured and kept only if the loss
falls (``swap_search``); with a refit to come, the candidate best after ``bingo.refit``
(``refit_choice``). ``calibrate`` runs them and reports what it measured
(``Calibration``, kept as ``search.last_calibration``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, Optional

import torch

from ..pruning.masks import copy_model, current_masks, prune
from ..pruning.refit import refit as refit_kept_weights  # `refit` is a flag here
from .candidates import Scores, available, candidate_scores, like_params, lowest
from .meter import Meter, layer_ranks

if TYPE_CHECKING:
    from ..engine.search import SearchEngine

SWAP_START = 50        # the first swap moves (pruned weights) / SWAP_START weights each way
SWAP_ITERATIONS = 200  # at most this many measured swaps
PAIR_LAYERS = 4   # up to this many targets, budget balancing tries every pair of layers
PAIR_TRIALS = 4   # beyond, the pairs per round that single-layer probes rank best
# Beyond PAIR_LAYERS targets (a ResNet, a transformer) every trial is a whole forward of a
# deep model, so the search is cut to a bounded number of them (issue 22): candidates
# screened at their global split and only the SCREEN best balanced; the pairs of layers
# ranked once per step size by the second-order change predicted from one gradient at
# the current mask (not 2n measured probes); steps down to 1/MANY_FINEST of the pruned
# total; MANY_SWAPS measured swaps at most.
SCREEN = 2
MANY_FINEST = 160
MANY_SWAPS = 20


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
    swaps: int = 0                     # accepted swap moves (calibrated only)
    loss_after_swaps: Optional[float] = None
    final_budgets: Dict[str, float] = field(default_factory=dict)
    refit_losses: Dict[str, float] = field(default_factory=dict)  # with refit=True: each
    refit_chosen: str = ""             # candidate mask's calibration loss after bingo.refit
    keep: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # the final
    # keep-masks (True = kept), as measured: the scores prune exactly these at `sparsity`

    def to_dict(self) -> Dict:
        """The report as plain numbers (the masks left out: see ``final_budgets``)."""
        return {k: v for k, v in asdict(self).items() if k != "keep"}


def global_counts(scores: Scores, sparsity: float) -> Dict[str, int]:
    """Per-layer pruned counts of a global ranking at ``sparsity``."""
    return {n: int((~k).sum()) for n, k in keep_at(scores, sparsity).items()}


def balance_budgets(meter: Meter, scores: Scores, sparsity: float,
                    ranks: Optional[Dict[str, torch.Tensor]] = None) -> tuple:
    """Per-layer pruned counts with the measured loss as low as moving weight budget
    between pairs of layers can make it (the total stays round(sparsity * n)): start at
    the global ranking's split, try moves of ``step`` weights from one layer to another,
    keep the best improving one, halve the step when none improves.

    Up to ``PAIR_LAYERS`` target tensors every ordered pair is tried each round (n(n-1)
    masked forwards). Beyond, that grows too fast (a 2-layer transformer has 7 targets
    and took ~600 forwards per candidate), so each round first probes every layer alone,
    pruning ``step`` more and ``step`` fewer (2n forwards), and tries only the
    ``PAIR_TRIALS`` pairs those probes predict to gain most."""
    ranks = layer_ranks(scores) if ranks is None else ranks  # given: already computed
    sizes = {n: s.numel() for n, s in scores.items()}
    measured: Dict[tuple, float] = {}  # a third of the trials revisit a split (a move back)

    def loss(split: Dict[str, int]) -> float:
        key = tuple(split.values())
        if key not in measured:
            measured[key] = meter.loss(ranks, split)
        return measured[key]

    def moved(split: Dict[str, int], name: str, d: int) -> Dict[str, int]:
        out = dict(split)
        out[name] += d
        return out

    pruned = global_counts(scores, sparsity)
    best = loss(pruned)
    total = sum(pruned.values())
    many = len(pruned) > PAIR_LAYERS
    step, smallest = max(1, total // 20), max(1, total // (MANY_FINEST if many else 2000))
    ranked, ranked_at, tried = [], None, 0
    while step >= smallest:
        pairs = [(a, b) for a in pruned for b in pruned if a != b]
        if many:  # pairs ranked by the predicted change of moving budget from a to b,
            if ranked_at != step:  # predicted once per step size
                fewer, more = predicted_changes(meter, ranks, pruned, step)
                ranked = sorted(pairs, key=lambda p: fewer[p[0]] + more[p[1]])
                ranked_at, tried = step, 0
            pairs, tried = ranked[tried:tried + PAIR_TRIALS], tried + PAIR_TRIALS
        move = None
        for a, b in pairs:
            d = min(step, pruned[a], sizes[b] - pruned[b])
            if d <= 0:
                continue
            trial = moved(moved(pruned, a, -d), b, d)
            value = loss(trial)
            if value < best - 1e-7:
                best, move = value, trial
        if move is None:
            step //= 2
        else:
            pruned = move
    return pruned, best


def predicted_changes(meter: Meter, ranks: Dict[str, torch.Tensor], pruned: Dict[str, int],
                      step: int) -> tuple:
    """Per layer, the loss change predicted (g·w and ½·fisher·w² at the current mask, one
    forward and backward) of pruning ``step`` fewer weights (restoring the highest-ranked
    pruned ones) and ``step`` more (pruning the lowest-ranked kept ones)."""
    keep = {n: r >= pruned[n] for n, r in ranks.items()}
    _, grad = meter.loss_and_grad(keep)
    fewer, more = {}, {}
    for i, t in enumerate(meter.search.targets):
        n, rank, p = t.name, ranks[t.name], pruned[t.name]
        w, g = meter.weights[n].float(), grad[n].float()
        curvature = 0.5 * meter.search.proxies.mean_fisher(i).float().to(w.device) * w * w
        restored = (rank >= p - min(step, p)) & (rank < p)
        fewer[n] = float((curvature + g * w)[restored].sum())
        removed = (rank >= p) & (rank < p + step)
        more[n] = float((curvature - g * w)[removed].sum())
    return fewer, more


def measured_keep(scores: Scores, pruned: Dict[str, int]) -> Dict[str, torch.Tensor]:
    """The keep-masks ``Meter.loss`` measures for per-layer counts ``pruned``: in each
    layer all but its ``pruned[name]`` lowest scores."""
    return {n: rank >= pruned[n] for n, rank in layer_ranks(scores).items()}


def budget_scores(scores: Scores, pruned: Dict[str, int]) -> Scores:
    """Scores whose global ranking prunes exactly ``pruned[name]`` weights of each layer at
    the total of ``pruned`` (and scales those budgets at other sparsities): each weight's
    within-layer rank fraction divided by its layer's budget."""
    out = {}
    for name, rank in layer_ranks(scores).items():
        budget = max(pruned[name], 1e-3)
        out[name] = (rank.double() + 0.5) / budget
    return out


def calibrate(search: "SearchEngine", sparsity: float, swaps: bool,
              refit: bool = False) -> Scores:
    """The ``budgeted`` (``swaps=False``) or ``calibrated`` estimator's scores for
    ``sparsity``, ``refit=True``: the mask best after a refit (see :func:`refit_choice`);
    the report goes to ``search.last_calibration``."""
    if refit and search.ranks.active:
        raise ValueError("refit=True solves each layer on this process's kept examples, "
                         "and a search spanning ranks keeps a share of them on each rank: "
                         "not supported yet; score without refit, or refit on one process")
    meter = Meter(search)
    report = Calibration(sparsity, search.ranks.total(len(meter.labels)))
    best_name, best_loss, best, keep = "", float("inf"), None, {}
    candidates = candidate_scores(search, available(search))
    balanced, ranks = candidates, {}
    if len(search.targets) > PAIR_LAYERS:  # many targets: balance the screened best only
        ranks = {name: layer_ranks(scores) for name, scores in candidates.items()}
        at_global = {name: meter.loss(ranks[name], global_counts(scores, sparsity))
                     for name, scores in candidates.items()}
        report.losses.update(at_global)
        balanced = {n: candidates[n] for n in sorted(at_global, key=at_global.get)[:SCREEN]}
    for name, scores in balanced.items():
        pruned, value = balance_budgets(meter, scores, sparsity, ranks.get(name))
        report.losses[name] = value
        report.budgets[name] = {n: pruned[n] / scores[n].numel() for n in pruned}
        if value < best_loss:
            best_name, best_loss = name, value
            best, keep = budget_scores(scores, pruned), measured_keep(scores, pruned)
    if best is None:
        raise FloatingPointError(
            f"every candidate mask gives a non-finite loss on the {len(meter.labels)} kept "
            f"calibration examples: they hold inf or NaN (search.calibration_batch() shows "
            f"them), or the model does; pass search.step() only batches whose training loss "
            f"was finite")
    report.chosen = best_name
    own = f"budgeted ({best_name})"
    if swaps:
        budgeted = best
        best, report.loss_after_swaps, report.swaps, keep = swap_search(search, meter, best,
                                                                        sparsity)
        candidates = {**candidates, own: budgeted}
        own = "calibrated"
    if refit:
        report.refit_chosen, best, keep = refit_choice(
            search, meter, {**candidates, own: best}, sparsity, report.refit_losses)
    report.keep = keep
    report.final_budgets = {n: 1.0 - float(k.double().mean()) for n, k in keep.items()}
    report.evaluations = meter.evaluations
    search.last_calibration = report
    return like_params(search, best)


def refit_choice(search: "SearchEngine", meter: Meter, candidates: Dict[str, Scores],
                 sparsity: float, losses: Dict[str, float]) -> tuple:
    """(name, scores, keep-masks) of the candidate whose mask at ``sparsity``, refit by
    ``bingo.refit``
    on the calibration examples (the refit kept only where it lowers the loss, as
    ``--refit`` does), has the lowest calibration loss; each loss goes into ``losses``.
    Why: the budgets measured without a refit are not the ones a refit serves best
    (LeNet-SGD at 95%: the calibrated mask prunes 82% of the output layer, and refit it
    scores 93.4% where magnitude's refit mask scores 96.1%; docs/results.md).
    Each trial prunes and refits a copy of the model; the model is only read."""
    best_name, best_loss, best, keep = "", float("inf"), None, {}
    with meter.borrowed, torch.no_grad():
        for name, scores in candidates.items():
            trial = copy_model(search.model)
            prune(trial, like_params(search, scores), sparsity=sparsity)
            mask = current_masks(trial, list(scores))
            fit = refit_kept_weights(trial, search.model, meter.inputs, labels=meter.labels,
                                     loss_fn=search.loss_fn)  # undone where the loss rises
            value = min(fit.loss_before, fit.loss_after)
            losses[name] = value if value == value else float("inf")
            meter.evaluations += 1
            if losses[name] < best_loss:
                best_name, best_loss, best, keep = name, losses[name], scores, mask
    if best is None:
        raise FloatingPointError("every candidate mask gives a non-finite loss after the "
                                 "refit on the kept calibration examples")
    return best_name, best, keep


def keep_at(scores: Scores, sparsity: float) -> Dict[str, torch.Tensor]:
    """Keep-masks of a global ranking of ``scores`` at ``sparsity``."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    keep = ~lowest(flat, round(sparsity * flat.numel()))  # a stable sort's cut, no sort
    pieces = torch.split(keep, [scores[n].numel() for n in names])
    return {n: p.view(scores[n].shape) for n, p in zip(names, pieces)}


def swap_search(search: "SearchEngine", meter: Meter, scores: Scores,
                sparsity: float) -> tuple:
    """Improve the mask of ``scores`` at ``sparsity`` by measured swaps (see the module
    docstring); returns scores whose global ranking prunes the improved mask (pruned
    weights keep their order below every kept one), its loss, the swaps accepted, and
    the mask (keep-masks, True = kept)."""
    keep = keep_at(scores, sparsity)
    names = list(keep)
    weights = {n: meter.weights[n].float() for n in names}
    fisher = {t.name: search.proxies.mean_fisher(i).float().to(weights[t.name].device)
              for i, t in enumerate(search.targets)}
    loss, grad = meter.loss_and_grad(keep)
    pruned_total = sum(int((~k).sum()) for k in keep.values())
    k, accepted = max(1, pruned_total // SWAP_START), 0
    iterations = SWAP_ITERATIONS if len(names) <= PAIR_LAYERS else MANY_SWAPS
    for _ in range(iterations):
        if k < 1 or pruned_total == 0:
            break
        remove, restore = [], []
        for n in names:  # second-order costs of zeroing a kept weight / restoring a pruned one
            w, g = weights[n], grad[n].float()
            curvature = 0.5 * fisher[n] * w * w
            inf = torch.full_like(w, float("inf"))
            remove.append(torch.where(keep[n], curvature - g * w, inf).reshape(-1))
            restore.append(torch.where(keep[n], inf, curvature + g * w).reshape(-1))
        flat = torch.cat([keep[n].reshape(-1) for n in names])
        step = min(k, pruned_total, flat.numel() - pruned_total)
        trial = flat.clone()
        trial[torch.topk(torch.cat(remove), step, largest=False).indices] = False
        trial[torch.topk(torch.cat(restore), step, largest=False).indices] = True
        pieces = torch.split(trial, [keep[n].numel() for n in names])
        candidate = {n: p.view(keep[n].shape) for n, p in zip(names, pieces)}
        if meter.loss_at(candidate) < loss:  # kept: its gradient proposes the next swap
            loss, grad = meter.loss_and_grad(candidate)
            keep, accepted = candidate, accepted + 1
        else:
            k //= 2
    low = min(float(scores[n].min()) for n in names)
    span = max(float(scores[n].max()) for n in names) - low + 1.0
    out = {n: torch.where(keep[n], scores[n].double() - low + span, scores[n].double() - low)
           for n in names}  # every pruned weight below every kept one, each side in old order
    return out, loss, accepted, keep
