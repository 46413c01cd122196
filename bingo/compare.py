"""``bingo compare``: every pruning method on one harness (same data, model, initial
weights, training loop and evaluation), at a grid of sparsities and/or at an accuracy
floor. Writes results.json, results.md (the table) and accuracy_vs_sparsity.png.

How each family meets a sparsity s (test accuracy reported, choices made on validation):

* after training, one shot (``bingo``, ``magnitude``): train once (BINGO with its ticket
  search), then prune the trained weights to s, optionally refit the kept weights by least
  squares (``--refit``, on the last ``calibration`` examples its training saw: the same
  images for every method, and for BINGO the ones its estimator measured), optionally
  fine-tune. ``bingo`` scores
  with the job's estimator; ``bingo:<estimator>`` rows score the same training run with
  another (bingo.estimators), except ``bingo:units``, whose neuron searches need a run
  of their own. A row's seconds include the shared training;
* at initialization (``random``, ``smart-ratio``, ``snip``, ``grasp``, ``synflow``): mask
  the initial weights to s, then train with the mask enforced (one training per s);
* ``hybrid`` (Su et al.): train dense, keep the largest weights within smart-ratio layer
  budgets, retrain from the trained weights at the initial learning rate (rewinding);
* ``imp``: rounds of magnitude pruning with rewinding (bingo.baselines.imp).

At a floor (``min_accuracy``): BINGO and magnitude bisect the sparsity on validation;
IMP prunes round after round until validation accuracy falls below it; the others, which
train once per sparsity, report the largest grid sparsity that stays above it.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .baselines.imp import imp as run_imp
from .baselines.budgets import smart_ratio
from .baselines.scores import (grasp_scores, magnitude_scores, random_scores, snip_scores,
                               synflow_scores)
from .calibration import CalibrationBuffer
from .data import load_dataset
from .estimators import ESTIMATORS, REFIT_AWARE
from .gradual import RAMP_SHARE, ramp_from_scores
from .jobs import RunSetup, environment
from .models import build_model
from .pruning import count_zeros, current_masks, prune
from .refit import prune_and_refit
from .targets import select_targets
from .training import accuracy, make_optimizer, steps_per_epoch, train

METHODS = ("bingo", "imp", "magnitude", "random", "smart-ratio", "hybrid", "snip", "grasp",
           "synflow")
ESTIMATOR_ROWS = tuple(f"bingo:{e}" for e in ESTIMATORS)


def is_method(name: str) -> bool:
    """A method ``bingo compare`` knows: one of METHODS, or bingo:<estimator>."""
    return name in METHODS or name in ESTIMATOR_ROWS


def _is_bingo(method: str) -> bool:
    return method == "bingo" or method in ESTIMATOR_ROWS


@dataclass
class CompareJob(RunSetup):
    """One comparison: the shared setup (data, model, training, BINGO's search) and each
    method's own knobs."""

    methods: Sequence[str] = METHODS
    sparsities: Sequence[float] = (0.5, 0.74, 0.88, 0.95)
    min_accuracy: Optional[float] = None
    finetune_epochs: int = 0           # after one-shot pruning (bingo, magnitude)
    finetune_ramp: float = 0.0         # > 1: the fine-tune starts at this many times the
                                       # goal's kept weights and prunes on (bingo.gradual)
    imp_rate: float = 0.2
    imp_scope: str = "layer"           # output layer at half the rate
    rewind_step: int = 0
    score_batch: int = 256             # SNIP / GraSP: images in their scoring batch
    sanity: bool = False               # also run the sanity checks (bingo.sanity)
    sanity_sparsity: float = 0.88

    def validate(self) -> None:
        unknown = [m for m in self.methods if not is_method(m)]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}, "
                             f"or bingo:<estimator> with one of {', '.join(ESTIMATORS)}")
        if not self.methods:
            raise ValueError("no methods given; choose from " + ", ".join(METHODS))
        self.check_estimators(self.row_estimators())
        for s in self.sparsities:
            if not 0.0 < s < 1.0:
                raise ValueError(f"sparsity {s} is not a fraction in (0, 1)")
        if not self.sparsities and self.min_accuracy is None:
            raise ValueError("give --sparsities, --min-accuracy, or both")
        if self.refit and self.finetune_ramp:
            raise ValueError("--refit solves the kept weights of a one-shot mask, and "
                             "--finetune-ramp changes the mask during the fine-tune: give one")
        if self.finetune_ramp and (self.finetune_ramp <= 1.0 or self.finetune_epochs < 1):
            raise ValueError(f"finetune_ramp {self.finetune_ramp} needs finetune_epochs >= 1 "
                             f"and a value above 1 (e.g. 4: start the fine-tune with 4x the "
                             f"goal's kept weights); 0 prunes in one shot before it")

    def row_estimators(self) -> List[str]:
        """The estimator of each BINGO row (``bingo``: the job's estimator)."""
        return [self.estimator if m == "bingo" else m.split(":", 1)[1]
                for m in self.methods if _is_bingo(m)]

    @property
    def name(self) -> str:
        goal = "_".join(f"s{s}" for s in self.sparsities)
        if self.min_accuracy is not None:
            goal += f"_acc{self.min_accuracy}"
        ramp = f"_ramp{self.finetune_ramp}" if self.finetune_ramp else ""
        refit = "_refit" if self.refit else ""
        return (f"compare_{self.model}_{self.dataset}_{self.optimizer}{self.lr}_e{self.epochs}_"
                f"b{self.batch_size}_{goal}{refit}_ft{self.finetune_epochs}{ramp}_seed{self.seed}")


@dataclass
class MethodResult:
    method: str
    points: List[Dict[str, float]] = field(default_factory=list)  # sparsity, val/test accuracy
    threshold: Optional[Dict[str, Any]] = None                    # what the floor allowed
    dense_test_accuracy: Optional[float] = None
    dense_val_accuracy: Optional[float] = None
    seconds: float = 0.0                                          # the method's whole run
    history: List[Dict[str, Any]] = field(default_factory=list)   # IMP rounds


class _Harness:
    """What every method shares: data, fresh models with the same initial weights,
    the training loop, evaluation."""

    def __init__(self, job: CompareJob, progress: bool, log: Callable[[str], None]):
        self.job, self.progress, self.log = job, progress, log
        self.data = load_dataset(job.dataset, job.data_dir)
        self.train_split = self.data.train.subset(job.train_limit)
        self.search_backend: Optional[str] = None  # set once BINGO has searched
        self.searched: Dict[str, Any] = {}  # granularity -> (model, search, seconds)
        self.calibrations: List[Dict[str, Any]] = []  # what each calibrated scoring chose
        self.regression: Optional[Dict[str, Any]] = None  # the regression row's fit

    def fresh(self, seed: Optional[int] = None) -> nn.Module:
        """The model at its initial weights (the same for every method, given the seed)."""
        torch.manual_seed(self.job.seed if seed is None else seed)
        return build_model(self.job.model)

    def target_names(self) -> List[str]:
        return [t.name for t in select_targets(self.fresh())]

    def with_train(self, split) -> "_Harness":
        """The same harness training on another split (the sanity checks' corrupted data)."""
        other = copy.copy(self)
        other.train_split = split
        other.searched, other.calibrations = {}, []
        return other

    def train(self, model: nn.Module, epochs: Optional[int] = None, after_step=None,
              description: str = "train"):
        opt = make_optimizer(self.job.optimizer, model.parameters(), self.job.lr)
        return train(model, self.train_split, epochs=epochs or self.job.epochs,
                     batch_size=self.job.batch_size, optimizer=opt, seed=self.job.seed,
                     after_step=after_step, progress=self.progress, description=description)

    def val(self, model: nn.Module) -> float:
        return accuracy(model, self.data.val)

    def test(self, model: nn.Module) -> float:
        return accuracy(model, self.data.test)

    def point(self, result: MethodResult, model: nn.Module, sparsity: float,
              **extra: Any) -> None:
        p = {"sparsity": sparsity, "zeros": zero_share(model), "val_accuracy": self.val(model),
             "test_accuracy": self.test(model), **extra}
        result.points.append(p)
        self.log(f"  {result.method:12s} sparsity {sparsity:.3f}: test {p['test_accuracy']:.4f}")

    def scoring_batch(self):
        n = min(self.job.score_batch, len(self.train_split))
        return self.train_split.images[:n], self.train_split.labels[:n]


def zero_share(model: nn.Module) -> float:
    """The share of the prunable weights that are exactly zero: what a point really holds
    (a refit can zero kept weights beyond the goal's mask)."""
    layers = count_zeros(model, [t.name for t in select_targets(model)]).values()
    return sum(x.zeros for x in layers) / sum(x.numel for x in layers)


class Trained(NamedTuple):
    """An after-training method's trained model and what prunes it."""
    model: nn.Module
    scores_at: Callable[[Optional[float]], Dict[str, torch.Tensor]]  # None: for a bisection
    reused: float  # seconds of a shared training run it reused (0 if it trained its own)
    recent: Callable[[], Tuple[torch.Tensor, torch.Tensor]]  # the last ``calibration``
    # (inputs, labels) its training saw: what ``--refit`` solves on (the labels decide
    # whether a refit is kept). Every run has the same data order, so the same images.


def _one_shot(h: _Harness, result: MethodResult, trained: Trained) -> None:
    """Prune trained weights by ``scores_at(s)`` to each sparsity s, and/or down to the floor
    (``scores_at(None)``: the scores for a bisection); with ``refit``, each mask's kept
    weights are then solved against the trained model (bingo.refit)."""
    job, model, scores_at = h.job, trained.model, trained.scores_at
    recent = dict(zip(("examples", "labels"), trained.recent())) if job.refit else {}
    result.dense_test_accuracy, result.dense_val_accuracy = h.test(model), h.val(model)
    for s in job.sparsities:
        m = copy.deepcopy(model)
        ramp, extra = None, {}
        if job.finetune_ramp:
            steps = steps_per_epoch(h.train_split, job.batch_size) * job.finetune_epochs
            ramp = ramp_from_scores(m, scores_at(s), s, job.finetune_ramp,
                                    max(1, round(RAMP_SHARE * steps)))
        elif job.refit:
            _, fit = prune_and_refit(m, scores_at(s), sparsity=s, evaluate=h.test, **recent)
            extra = {"test_accuracy_before_refit": fit.accuracy_before,
                     "refit_kept": fit.kept, "refit_seconds": fit.seconds}
        else:
            prune(m, scores_at(s), sparsity=s)
        if job.finetune_epochs:
            h.train(m, epochs=job.finetune_epochs, after_step=ramp,
                    description=f"fine-tune {result.method}")
        if ramp is not None:
            ramp.finish()
        h.point(result, m, s, **extra)
    if job.min_accuracy is not None:
        m = copy.deepcopy(model)
        goal = dict(min_accuracy=job.min_accuracy, evaluate=h.val)
        if job.refit:
            report, fit = prune_and_refit(m, scores_at(None), **recent, **goal)
            val = fit.accuracy_after
        else:
            report = prune(m, scores_at(None), **goal)
            val = report.accuracy_after
        result.threshold = {"sparsity": report.sparsity, "val_accuracy": val,
                            "test_accuracy": h.test(m), "how": "bisection on validation"}


def _searched(h: "_Harness", estimator: str, search_data: Optional[Callable]):
    """The model trained with BINGO's search, and the search (one run per granularity,
    shared by every estimator row; a ``search_data`` run is never shared). Returns
    (model, search, training seconds if reused else 0)."""
    neuron = estimator == "units"
    key = "neuron" if neuron else h.job.granularity
    if search_data is None and key in h.searched:
        model, search, seconds = h.searched[key]
        return model, search, seconds
    start = time.perf_counter()
    model = h.fresh()
    overrides = dict(granularity="neuron", rule="contrast", reset_to="zero") if neuron else {}
    if neuron or search_data is not None:
        scored_by = [estimator]
    else:  # every weight-level row shares this run
        scored_by = [e for e in h.job.row_estimators() if e != "units"]
    search = h.job.make_search(model, scored_by, **overrides)
    step = search.step if search_data is None else (lambda x, y: search.step(*search_data(x, y)))
    h.train(model, after_step=step, description=f"train+search bingo ({key})")
    h.search_backend = search.backend
    if search_data is None:
        h.searched[key] = (model, search, time.perf_counter() - start)
    return model, search, 0.0


def train_and_score(h: "_Harness", method: str,
                    search_data: Optional[Callable] = None) -> Trained:
    """Train an after-training method (BINGO: with the search; ``search_data(x, y) -> (x, y)``
    changes what the search sees, not what training sees) and score it."""
    if _is_bingo(method):
        estimator = h.job.estimator if method == "bingo" else method.split(":", 1)[1]
        model, search, reused = _searched(h, estimator, search_data)

        def scores_at(sparsity: Optional[float]) -> Dict[str, torch.Tensor]:
            scores = search.significance(estimator, sparsity=sparsity,
                                         refit=h.job.refit and estimator in REFIT_AWARE)
            if estimator == "calibrated":
                c = search.last_calibration
                h.calibrations.append({"method": method, **c.to_dict()})
                h.log(f"  {method:12s} calibrated at {c.sparsity:.3f}: chose {c.chosen} "
                      f"(loss {c.losses[c.chosen]:.4f}, {c.evaluations} evaluations)"
                      + (f"; for the refit {c.refit_chosen} (loss after refit "
                         f"{c.refit_losses[c.refit_chosen]:.4f})" if c.refit_chosen else ""))
            if estimator == "regression" and h.regression is None:
                h.regression = search.regression.report()
                h.log(f"  {method:12s} fit on {h.regression['observations']} searches: "
                      f"R² {h.regression['explained']:.3f}")
            return scores
        return Trained(model, scores_at, reused, search.calibration_batch)
    model = h.fresh()
    recent = CalibrationBuffer(h.job.calibration)  # fed only when --refit will read it
    h.train(model, after_step=recent.add if h.job.refit else None,
            description=f"train {method}")
    scores = magnitude_scores(model)
    return Trained(model, lambda s: scores, 0.0, recent.batch)


def _after_training(h: _Harness, result: MethodResult) -> None:
    trained = train_and_score(h, result.method)
    result.seconds += trained.reused
    _one_shot(h, result, trained)


def _grid_threshold(h: _Harness, result: MethodResult) -> None:
    """Methods that train once per sparsity: the largest grid point above the floor."""
    if h.job.min_accuracy is None:
        return
    ok = [p for p in result.points if p["val_accuracy"] >= h.job.min_accuracy]
    best = max(ok, key=lambda p: p["sparsity"]) if ok else None
    result.threshold = None if best is None else {**best, "how": "largest grid sparsity"}


def _at_init(goal_fn) -> Callable[[_Harness, MethodResult], None]:
    """A method that masks the initial weights: goal_fn(h, model, s) -> (scores, sparsity)."""
    def run(h: _Harness, result: MethodResult) -> None:
        for s in h.job.sparsities:
            model = h.fresh()
            scores, goal = goal_fn(h, model, s)
            prune(model, scores, sparsity=goal)
            h.train(model, description=f"train {result.method} s={s}")
            h.point(result, model, s)
        _grid_threshold(h, result)
    return run


def _smart_budget(model: nn.Module, s: float) -> Dict[str, float]:
    targets = select_targets(model)
    keep = smart_ratio([t.size for t in targets], s)
    return {t.name: 1.0 - k for t, k in zip(targets, keep)}


def _random(h, model, s):
    return random_scores(model, torch.Generator().manual_seed(h.job.seed + 1)), s


def _smart(h, model, s):
    return random_scores(model, torch.Generator().manual_seed(h.job.seed + 1)), \
        _smart_budget(model, s)


def _snip(h, model, s):
    return snip_scores(model, *h.scoring_batch()), s


def _grasp(h, model, s):
    return grasp_scores(model, *h.scoring_batch()), s


def _synflow(h, model, s):
    return synflow_scores(model, h.train_split.images.shape[1:], s), s


def _hybrid(h: _Harness, result: MethodResult) -> None:
    trained = h.fresh()
    h.train(trained, description="train hybrid (dense)")
    result.dense_test_accuracy, result.dense_val_accuracy = h.test(trained), h.val(trained)
    for s in h.job.sparsities:
        model = copy.deepcopy(trained)
        prune(model, magnitude_scores(model), sparsity=_smart_budget(model, s))
        h.train(model, description=f"retrain hybrid s={s}")  # learning-rate rewinding
        h.point(result, model, s)
    _grid_threshold(h, result)


def _imp(h: _Harness, result: MethodResult) -> None:
    job = h.job
    model = h.fresh()

    def train_fn(m, after_step=None):
        return h.train(m, after_step=after_step, description="train imp round")

    def on_round(r):
        h.log(f"  imp          round {r.round}: sparsity {r.sparsity:.3f}, "
              f"val {r.val_accuracy:.4f}, test {r.test_accuracy:.4f}, {r.seconds:.1f}s")
    rounds = run_imp(model, train_fn, val=h.val, test=h.test, sparsities=job.sparsities,
                         min_accuracy=job.min_accuracy, rate=job.imp_rate, scope=job.imp_scope,
                         rewind_step=job.rewind_step, on_round=on_round)
    result.history = [asdict(r) for r in rounds]
    result.dense_test_accuracy = rounds[0].test_accuracy
    result.dense_val_accuracy = rounds[0].val_accuracy
    for s in job.sparsities:  # the round that pruned to s (targets are hit to rounding)
        r = min(rounds[1:], key=lambda r: abs(r.sparsity - s))
        result.points.append({"sparsity": s, "val_accuracy": r.val_accuracy,
                              "test_accuracy": r.test_accuracy})
    if job.min_accuracy is not None:
        ok = [r for r in rounds[1:] if r.val_accuracy >= job.min_accuracy]
        best = max(ok, key=lambda r: r.sparsity) if ok else None
        result.threshold = None if best is None else {
            "sparsity": best.sparsity, "val_accuracy": best.val_accuracy,
            "test_accuracy": best.test_accuracy, "how": "rounds until validation falls below"}


INIT_GOALS = {"random": _random, "smart-ratio": _smart, "snip": _snip, "grasp": _grasp,
              "synflow": _synflow}
DATA_FREE = ("random", "smart-ratio", "synflow")  # their masks never look at the data
RUNNERS = {"bingo": _after_training, "magnitude": _after_training, "imp": _imp,
           "hybrid": _hybrid, **{m: _at_init(goal) for m, goal in INIT_GOALS.items()},
           **{m: _after_training for m in ESTIMATOR_ROWS}}


def find_masks(h: "_Harness", method: str, sparsity: float,
               search_data: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """The keep-masks ``method`` chooses at ``sparsity`` on ``h``'s training data (what the
    sanity checks perturb); ``search_data`` as in :func:`train_and_score`."""
    if _is_bingo(method) or method == "magnitude":
        trained = train_and_score(h, method, search_data)
        model = copy.deepcopy(trained.model)  # a shared BINGO run stays unpruned for the next row
        prune(model, trained.scores_at(sparsity), sparsity=sparsity)
    elif method == "hybrid":
        model = h.fresh()
        h.train(model, description="train hybrid (dense)")
        prune(model, magnitude_scores(model), sparsity=_smart_budget(model, sparsity))
    elif method == "imp":
        model = h.fresh()
        run_imp(model, lambda m, after_step=None: h.train(m, after_step=after_step,
                                                          description="train imp round"),
                val=h.val, test=h.test, sparsities=[sparsity], rate=h.job.imp_rate,
                scope=h.job.imp_scope, rewind_step=h.job.rewind_step)
    else:
        model = h.fresh()
        scores, goal = INIT_GOALS[method](h, model, sparsity)
        prune(model, scores, sparsity=goal)
    return current_masks(model, [t for t in h.target_names()])


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_compare(job: CompareJob, progress: bool = True,
                log: Callable[[str], None] = _stderr) -> Dict[str, Any]:
    """Run every method of ``job``; returns the JSON-able results."""
    job.validate()
    wall = time.perf_counter()
    h = _Harness(job, progress, log)
    results: List[MethodResult] = []
    for i, method in enumerate(job.methods, start=1):
        log(f"[{i}/{len(job.methods)}] {method}")
        result = MethodResult(method)
        start = time.perf_counter()
        RUNNERS[method](h, result)
        result.seconds += time.perf_counter() - start
        results.append(result)
    sanity = []
    if job.sanity:
        from .sanity import run_sanity
        for i, method in enumerate(job.methods, start=1):
            log(f"[sanity {i}/{len(job.methods)}] {method} at {job.sanity_sparsity}")
            sanity.append(run_sanity(h, method, job.sanity_sparsity))
    return {"name": job.name, "sanity": sanity, "config": asdict(job) | {"methods": list(job.methods),
                                                      "sparsities": list(job.sparsities)},
            "methods": [asdict(r) for r in results], "total_seconds": time.perf_counter() - wall,
            "calibrations": h.calibrations, "regression": h.regression,
            "environment": environment() | {"search_backend": h.search_backend}}


def markdown_table(results: Dict[str, Any]) -> str:
    """Test accuracy per sparsity, sparsity at the floor, and wall time (also vs IMP)."""
    cfg = results["config"]
    sparsities = cfg["sparsities"]
    floor = cfg["min_accuracy"]
    imp_seconds = next((m["seconds"] for m in results["methods"] if m["method"] == "imp"), None)
    head = ["method"] + [f"test acc @ {s:.0%}" for s in sparsities]
    if floor is not None:
        head += [f"sparsity @ val ≥ {floor:.0%}", "its test acc"]
    head += ["seconds", "× IMP time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for m in results["methods"]:
        by_s = {p["sparsity"]: p["test_accuracy"] for p in m["points"]}
        row = [m["method"]] + [f"{100 * by_s[s]:.2f}%" if s in by_s else "" for s in sparsities]
        if floor is not None:
            t = m["threshold"]
            row += ([f"{100 * t['sparsity']:.1f}%", f"{100 * t['test_accuracy']:.2f}%"]
                    if t else ["none", ""])
        row += [f"{m['seconds']:.1f}",
                f"{m['seconds'] / imp_seconds:.2f}" if imp_seconds else ""]
        lines.append("| " + " | ".join(row) + " |")
    dense = [m["dense_test_accuracy"] for m in results["methods"] if m["dense_test_accuracy"]]
    note = f"\nDense test accuracy: {100 * dense[0]:.2f}%." if dense else ""
    return "\n".join(lines) + "\n" + note + "\n" + sanity_table(results.get("sanity") or [])


def sanity_table(sanity: List[Dict[str, Any]]) -> str:
    """Ticket accuracy per method and each check's change (percentage points)."""
    if not sanity:
        return ""
    from .sanity import CHECKS
    lines = [f"\nSanity checks (Su et al. 2020) at sparsity {sanity[0]['sparsity']:.0%}: the "
             f"ticket (mask on the initial weights, trained) and each check's change of its "
             f"test accuracy, in percentage points (n/a: the method never sees the data).\n",
             "| method | ticket test acc | " + " | ".join(CHECKS) + " |",
             "|---|---:|" + "---:|" * len(CHECKS)]
    for r in sanity:
        cells = ["n/a" if r["checks"].get(c) is None else f"{100 * r['checks'][c]['change']:+.2f}"
                 for c in CHECKS]
        lines.append(f"| {r['method']} | {100 * r['test_accuracy']:.2f}% | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def plot(results: Dict[str, Any], path: Path) -> None:
    """Test accuracy against sparsity, one line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in results["methods"]:
        pts = sorted((p["sparsity"], p["test_accuracy"]) for p in m["points"])
        if pts:
            ax.plot([100 * s for s, _ in pts], [100 * a for _, a in pts], marker="o",
                    label=m["method"])
    ax.set_xlabel("sparsity (% of prunable weights removed)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{results['config']['model']} on {results['config']['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: Dict[str, Any], out: Path) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "table": out / "results.md",
             "plot": out / "accuracy_vs_sparsity.png"}
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["table"].write_text(f"# {results['name']}\n\n" + markdown_table(results))
    plot(results, paths["plot"])
    return paths
