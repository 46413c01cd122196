"""Estimators: how a TicketSearch's evidence becomes one score per weight.

Evidence a search collects in one training run (nothing else is ever trained):

* the random-subset searches, folded by the rule (:mod:`bingo.rules`);
* the gradient proxies (:mod:`bingo.proxies`): fisher, reset, movement;
* the most recent training batches (``search.calibration_batch()``), on which the
  network with any candidate mask can be measured exactly, as the searches do.

Named estimators (higher = more important for all of them):

=============== ===========================================================================
``search``      the rule's scores alone (the paper's significance when rule="paper")
``regression``  per layer, the coefficients that best predict each search's damage from
                its subset's sums of the features obd, reset and distance
                (:mod:`bingo.regression`), applied to each weight: its predicted damage
``magnitude``   |w|
``fisher``      ½ F̄ w²: OBD's estimate of the loss increase when w is pruned to zero
``reset``       Σ |g (r - w)|: the first-order size of the search's reset, summed over steps
``movement``    -Σ g w: pushed away from zero by training (Sanh et al.)
``mag+<proxy>`` the average of the global ranks of |w| and of fisher/reset/movement
``units``       needs granularity="neuron": the lowest-scoring units of each hidden layer
                removed whole (a share measured on the calibration batches), the other
                weights ranked by magnitude
``budgeted``    every proxy and mixture above, each with its layer budgets moved until the
                measured calibration loss stops falling; the one with the lowest loss kept
``calibrated``  the default: ``budgeted``, then a swap search on its mask: at the pruned
                network, the gradient on the calibration batches and the Fisher proxy
                estimate what removing each kept weight and restoring each pruned one
                would cost; the k cheapest of each are swapped, the swap is measured
                exactly and kept only if the loss falls (k halves when it does not)
=============== ===========================================================================

``budgeted`` and ``calibrated`` optimize for the sparsity asked for; their scores prune
exactly that mask there, and degrade gracefully at other sparsities (lowest first).

The searches measure what a candidate mask really costs; what they cannot do is resolve
a quarter of a million separate numbers, so they decide the few things that matter
most: which proxy to trust, and how much each layer can lose.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import torch
from torch.func import functional_call

from .batched import sequential_layers
from .pruning import copy_model, current_masks, prune
from .refit import refit as refit_kept_weights  # `refit` is a flag here
from .regression import regression_scores

if TYPE_CHECKING:
    from .search import TicketSearch

Scores = Dict[str, torch.Tensor]
PROXY_ESTIMATORS = ("magnitude", "fisher", "reset", "movement")
MIXTURES = ("mag+fisher", "mag+reset", "mag+movement")
ESTIMATORS = ("calibrated", "budgeted", "search", "regression", *PROXY_ESTIMATORS, *MIXTURES,
              "units")
DEFAULT_ESTIMATOR = "calibrated"
SEARCH_ESTIMATORS = ("search", "regression", "units")  # the ones that read the searches
MEASURING_ESTIMATORS = ("calibrated", "budgeted", "units")  # measure masks on kept examples
REFIT_AWARE = ("calibrated", "budgeted")  # refit=True: choose the mask best after a refit
DEFAULT_CALIBRATION_SPARSITY = 0.9
UNIT_SHARES = (0.0, 0.1, 0.2, 0.3, 0.5)  # shares of hidden units "units" tries removing
SWAP_START = 50        # the first swap moves (pruned weights) / SWAP_START weights each way
SWAP_ITERATIONS = 200  # at most this many measured swaps
PREFIX_BYTES = 256 << 20  # activations a budget search keeps between its trials
PAIR_LAYERS = 4   # up to this many targets, budget balancing tries every pair of layers
PAIR_TRIALS = 4   # beyond, the pairs per round that single-layer probes rank best


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


def estimate(search: "TicketSearch", name: str = DEFAULT_ESTIMATOR, *,
             sparsity: Optional[float] = None, refit: bool = False) -> Scores:
    """Scores of every target of ``search`` by the estimator ``name`` (see module doc).
    ``refit=True`` (calibrated, budgeted) chooses the mask that will be refit by
    ``bingo.refit``: the lowest calibration loss after a refit, among every candidate's
    global ranking and the estimator's own mask (see :func:`refit_choice`)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if refit and name not in REFIT_AWARE:
        raise ValueError(f"refit=True chooses among the calibrated estimator's candidate "
                         f"masks; the {name} estimator has one ranking: pass refit=False "
                         f"(then refit its mask with bingo.refit)")
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (the share of weights you "
                         f"will prune), got {sparsity}")
    if name == "search":
        return search.rule_significance()
    if name == "regression":
        return _like_params(search, regression_scores(search.proxies, search.regression,
                                                      _weights(search)))
    if name == "units":
        return _units(search, sparsity or DEFAULT_CALIBRATION_SPARSITY)
    if name in ("calibrated", "budgeted"):
        return _calibrated(search, sparsity or DEFAULT_CALIBRATION_SPARSITY,
                           swaps=name == "calibrated", refit=refit)
    if name not in available(search):  # a movement estimator, movement not collected
        raise ValueError(f"the {name} estimator reads the movement proxy, which this search "
                         f"did not collect: build the TicketSearch with movement=True (the "
                         f"default; bingo: drop --no-movement)")
    return _candidates(search, [name])[name]


# ---------------------------------------------------------------- proxies and mixtures
def _weights(search: "TicketSearch") -> Scores:
    params = search._parameters()  # by name, with the search's errors for what is gone
    return {t.name: params[t.name].detach() for t in search.targets}


def available(search: "TicketSearch") -> tuple:
    """The single proxies and mixtures ``search`` can score (movement only if collected):
    the candidates of the budgeted and calibrated estimators."""
    return tuple(n for n in PROXY_ESTIMATORS + MIXTURES
                 if "movement" not in n or search.proxies.movement)


def proxy_scores(search: "TicketSearch") -> Dict[str, Scores]:
    """The single-proxy estimators (movement only if collected), float32 and shaped like
    the weights."""
    if search.proxies.steps == 0 and search.step_count > 0:
        raise ValueError("the gradient proxies saw no step: call search.step() after "
                         "loss.backward() and optimizer.step(), before zero_grad()")
    weights = _weights(search)
    out: Dict[str, Scores] = {k: {} for k in available(search) if k in PROXY_ESTIMATORS}
    for i, t in enumerate(search.targets):
        w = weights[t.name].float()
        sums = search.proxies.sums[i]
        _check_finite(t.name, {"weights": w, **sums})
        out["magnitude"][t.name] = w.abs()
        out["fisher"][t.name] = 0.5 * search.proxies.mean_fisher(i).float().to(w.device) * w * w
        out["reset"][t.name] = sums["reset"].float().to(w.device)
        if "movement" in out:
            out["movement"][t.name] = sums["movement"].float().to(w.device)
    return out


def _check_finite(name: str, tensors: Dict[str, torch.Tensor]) -> None:
    """Scores from inf/NaN would rank at random: name what diverged instead."""
    for what, x in tensors.items():
        if bool(torch.isfinite(x).all()):
            continue
        if what == "weights":
            raise FloatingPointError(
                f"the weights of {name!r} contain inf or NaN: training diverged; lower the "
                f"learning rate and train again")
        raise FloatingPointError(
            f"the {what} proxy of {name!r} holds inf or NaN: a training step that "
            f"search.step() saw had non-finite gradients (training diverged, or a torch.amp "
            f"GradScaler skipped the step). Call search.step() only after steps whose loss "
            f"and gradients were finite, and run the search again")


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
        self.layers = sequential_layers(search.model, search.targets)
        self._prefixes = _Prefixes(self.layers) if self.layers is not None else None

    def loss(self, ranks: Dict[str, torch.Tensor], pruned: Dict[str, int]) -> float:
        """``ranks[name]``: each weight's place in its layer's ascending score order. On a
        chain of layers (``batched.sequential_layers``) the activations entering each
        target layer are kept for the pruned counts of the targets before it
        (``_Prefixes``): most trials of a budget search change two layers, so the layers
        before the first of them need not run again."""
        def masked(name: str) -> torch.Tensor:
            w = self.weights[name]
            return torch.where(ranks[name] >= pruned[name], w, torch.zeros_like(w))
        with self.borrowed, torch.no_grad():
            if self._prefixes is None:
                out = functional_call(self.search.model, {n: masked(n) for n in self.weights},
                                      (self.inputs,))
            else:
                out = self._prefixes.forward(self.inputs, ranks, pruned, masked)
            value = float(self.search.loss_fn(out, self.labels))
        self.evaluations += 1
        return value if value == value else float("inf")  # NaN counts as worst

    def loss_and_grad(self, keep: Dict[str, torch.Tensor]) -> tuple:
        """The loss with the weights outside ``keep`` zeroed, and its gradient with respect
        to every weight (pruned ones included) at that point. Gradients go to substituted
        tensors, never to the parameters' ``.grad``."""
        overrides = {n: (w * keep[n].to(w.dtype)).requires_grad_(True)
                     for n, w in self.weights.items()}
        with self.borrowed, torch.enable_grad():
            out = functional_call(self.search.model, overrides, (self.inputs,))
            loss = self.search.loss_fn(out, self.labels)
            grads = torch.autograd.grad(loss, list(overrides.values()))
        self.evaluations += 1
        value = float(loss.detach())
        return (value if value == value else float("inf")), dict(zip(overrides, grads))


class _Prefixes:
    """A chain's activations entering each target layer, kept by the pruned counts of the
    targets before it, for one ranking at a time (a new ``ranks`` clears them), least
    recently used dropped past PREFIX_BYTES. A kept activation is only ever read by the
    target layer that follows it, so an in-place layer cannot change it. The same
    operations in the same order as a whole forward: the same losses, bit for bit."""

    def __init__(self, layers):
        self.layers = layers
        self.cuts = []  # (layer index, the target names before it) per target layer
        before: list = []
        for i, (_, _, t) in enumerate(layers):
            if t is not None:
                self.cuts.append((i, tuple(before)))
                before.append(t.name)
        self.kept: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self.ranks = None
        self.resumed = 0  # forwards that started from a kept activation

    def forward(self, inputs: torch.Tensor, ranks: Dict[str, torch.Tensor],
                pruned: Dict[str, int], masked) -> torch.Tensor:
        if ranks is not self.ranks:
            self.kept.clear()
            self.ranks = ranks
        keys = {i: (i,) + tuple(pruned[n] for n in names) for i, names in self.cuts}
        start, h, resumed = 0, inputs, None
        for i, _ in reversed(self.cuts):
            if keys[i] in self.kept:
                start, h, resumed = i, self.kept[keys[i]], i
                self.kept.move_to_end(keys[i])
                self.resumed += 1
                break
        for i in range(start, len(self.layers)):
            _, m, t = self.layers[i]
            if t is None:
                h = m(h)
                continue
            if i != resumed:
                self._keep(keys[i], h)
            h = functional_call(m, {t.attr: masked(t.name)}, (h,))
        return h

    def _keep(self, key: tuple, h: torch.Tensor) -> None:
        self.kept[key] = h
        total = sum(x.numel() * x.element_size() for x in self.kept.values())
        while total > PREFIX_BYTES and len(self.kept) > 1:
            _, old = self.kept.popitem(last=False)
            total -= old.numel() * old.element_size()


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
    return {n: int((~k).sum()) for n, k in _keep_at(scores, sparsity).items()}


def balance_budgets(meter: _Meter, scores: Scores, sparsity: float) -> tuple:
    """Per-layer pruned counts with the measured loss as low as moving weight budget
    between pairs of layers can make it (the total stays round(sparsity * n)): start at
    the global ranking's split, try moves of ``step`` weights from one layer to another,
    keep the best improving one, halve the step when none improves.

    Up to ``PAIR_LAYERS`` target tensors every ordered pair is tried each round (n(n-1)
    masked forwards). Beyond, that grows too fast (a 2-layer transformer has 7 targets
    and took ~600 forwards per candidate), so each round first probes every layer alone,
    pruning ``step`` more and ``step`` fewer (2n forwards), and tries only the
    ``PAIR_TRIALS`` pairs those probes predict to gain most."""
    ranks = layer_ranks(scores)
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

    pruned = _global_counts(scores, sparsity)
    best = loss(pruned)
    total = sum(pruned.values())
    step, smallest = max(1, total // 20), max(1, total // 2000)
    while step >= smallest:
        pairs = [(a, b) for a in pruned for b in pruned if a != b]
        if len(pruned) > PAIR_LAYERS:  # predicted change of moving budget from a to b
            fewer = {a: loss(moved(pruned, a, -min(step, pruned[a]))) - best for a in pruned}
            more = {b: loss(moved(pruned, b, min(step, sizes[b] - pruned[b]))) - best
                    for b in pruned}
            pairs = sorted(pairs, key=lambda p: fewer[p[0]] + more[p[1]])[:PAIR_TRIALS]
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


def measured_keep(scores: Scores, pruned: Dict[str, int]) -> Dict[str, torch.Tensor]:
    """The keep-masks ``_Meter.loss`` measures for per-layer counts ``pruned``: in each
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


def _calibrated(search: "TicketSearch", sparsity: float, swaps: bool,
                refit: bool = False) -> Scores:
    meter = _Meter(search)
    report = Calibration(sparsity, len(meter.labels))
    best_name, best_loss, best, keep = "", float("inf"), None, {}
    candidates = _candidates(search, available(search))
    for name, scores in candidates.items():
        pruned, value = balance_budgets(meter, scores, sparsity)
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
    return _like_params(search, best)


def refit_choice(search: "TicketSearch", meter: _Meter, candidates: Dict[str, Scores],
                 sparsity: float, losses: Dict[str, float]) -> tuple:
    """(name, scores, keep-masks) of the candidate whose mask at ``sparsity``, refit by ``bingo.refit``
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
            prune(trial, _like_params(search, scores), sparsity=sparsity)
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


def _keep_at(scores: Scores, sparsity: float) -> Dict[str, torch.Tensor]:
    """Keep-masks of a global ranking of ``scores`` at ``sparsity``."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).double() for n in names])
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.sort(flat, stable=True).indices[:round(sparsity * flat.numel())]] = False
    pieces = torch.split(keep, [scores[n].numel() for n in names])
    return {n: p.view(scores[n].shape) for n, p in zip(names, pieces)}


def swap_search(search: "TicketSearch", meter: _Meter, scores: Scores,
                sparsity: float) -> tuple:
    """Improve the mask of ``scores`` at ``sparsity`` by measured swaps (see the module
    docstring); returns scores whose global ranking prunes the improved mask (pruned
    weights keep their order below every kept one), its loss, the swaps accepted, and
    the mask (keep-masks, True = kept)."""
    keep = _keep_at(scores, sparsity)
    names = list(keep)
    weights = {n: meter.weights[n].float() for n in names}
    fisher = {t.name: search.proxies.mean_fisher(i).float().to(weights[t.name].device)
              for i, t in enumerate(search.targets)}
    loss, grad = meter.loss_and_grad(keep)
    pruned_total = sum(int((~k).sum()) for k in keep.values())
    k, accepted = max(1, pruned_total // SWAP_START), 0
    for _ in range(SWAP_ITERATIONS):
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
        value, g_new = meter.loss_and_grad(candidate)
        if value < loss:
            keep, loss, grad, accepted = candidate, value, g_new, accepted + 1
        else:
            k //= 2
    low = min(float(scores[n].min()) for n in names)
    span = max(float(scores[n].max()) for n in names) - low + 1.0
    out = {n: torch.where(keep[n], scores[n].double() - low + span, scores[n].double() - low)
           for n in names}  # every pruned weight below every kept one, each side in old order
    return out, loss, accepted, keep


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
