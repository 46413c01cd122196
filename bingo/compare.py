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
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .baselines.budgets import smart_ratio
from .baselines.gmp import GradualMagnitudePruning
from .baselines.imp import imp as run_imp
from .baselines.scores import (grasp_scores, magnitude_scores, random_scores, snip_scores,
                               synflow_scores)
from .calibration import CalibrationBuffer
from .estimators import ESTIMATORS, REFIT_AWARE
from .gradual import RAMP_SHARE, ramp_from_scores
from .gradual_ticket import GradualTicketPruning
from .harness import Harness, MethodResult
from .jobs import RunSetup, environment
from .pruning import current_masks, prune
from .refit import prune_and_refit
from .targets import select_targets
from .training import steps_per_epoch

METHODS = ("bingo", "bingo-gradual", "gmp", "gmp-layer", "imp", "magnitude", "random",
           "smart-ratio", "hybrid", "snip", "grasp", "synflow")
GRADUAL = ("bingo-gradual", "gmp", "gmp-layer")  # prune during the one training run
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
        if any(m in GRADUAL for m in self.methods):
            for s in self.sparsities:
                self.schedule_for(s, 1000)  # the schedule's own checks, before any training
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
        gradual = (f"_gmp{self.gmp_start}-{self.gmp_end}-{self.gmp_every}"
                   if any(m in GRADUAL for m in self.methods) else "")
        return (f"compare_{self.model}_{self.dataset}_{self.optimizer}{self.lr}_e{self.epochs}_"
                f"b{self.batch_size}_{goal}{refit}_ft{self.finetune_epochs}{ramp}{gradual}_"
                f"seed{self.seed}")


class Trained(NamedTuple):
    """An after-training method's trained model and what prunes it."""
    model: nn.Module
    scores_at: Callable[[Optional[float]], Dict[str, torch.Tensor]]  # None: for a bisection
    reused: float  # seconds of a shared training run it reused (0 if it trained its own)
    recent: Callable[[], Tuple[torch.Tensor, torch.Tensor]]  # the last ``calibration``
    # (inputs, labels) its training saw: what ``--refit`` solves on (the labels decide
    # whether a refit is kept). Every run has the same data order, so the same images.


def _one_shot(h: Harness, result: MethodResult, trained: Trained) -> None:
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


def _searched(h: "Harness", estimator: str, search_data: Optional[Callable]):
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


def train_and_score(h: "Harness", method: str,
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


def _after_training(h: Harness, result: MethodResult) -> None:
    trained = train_and_score(h, result.method)
    result.seconds += trained.reused
    _one_shot(h, result, trained)


def _grid_threshold(h: Harness, result: MethodResult) -> None:
    """Methods that train once per sparsity: the largest grid point above the floor."""
    if h.job.min_accuracy is None:
        return
    ok = [p for p in result.points if p["val_accuracy"] >= h.job.min_accuracy]
    best = max(ok, key=lambda p: p["sparsity"]) if ok else None
    result.threshold = None if best is None else {**best, "how": "largest grid sparsity"}


def _at_init(goal_fn) -> Callable[[Harness, MethodResult], None]:
    """A method that masks the initial weights: goal_fn(h, model, s) -> (scores, sparsity)."""
    def run(h: Harness, result: MethodResult) -> None:
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


def _hybrid(h: Harness, result: MethodResult) -> None:
    trained = h.fresh()
    h.train(trained, description="train hybrid (dense)")
    result.dense_test_accuracy, result.dense_val_accuracy = h.test(trained), h.val(trained)
    for s in h.job.sparsities:
        model = copy.deepcopy(trained)
        prune(model, magnitude_scores(model), sparsity=_smart_budget(model, s))
        h.train(model, description=f"retrain hybrid s={s}")  # learning-rate rewinding
        h.point(result, model, s)
    _grid_threshold(h, result)


def _imp(h: Harness, result: MethodResult) -> None:
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


def _gradual(h: Harness, result: MethodResult) -> None:
    """Prune during the one training run (one run per sparsity): ``gmp`` by global
    magnitude, ``gmp-layer`` each layer alike, ``bingo-gradual`` by what its search
    measured (bingo.gradual_ticket), all on the same cubic schedule."""
    job = h.job
    total = steps_per_epoch(h.train_split, job.batch_size) * job.epochs
    when = dict(total_steps=total, start=job.gmp_start, end=job.gmp_end, every=job.gmp_every)
    if job.min_accuracy is not None and not job.sparsities:
        raise ValueError(f"{result.method} prunes during training to a sparsity fixed in "
                         f"advance: give --sparsities (the floor then picks among them)")
    for s in job.sparsities:
        model = h.fresh()
        if result.method == "bingo-gradual":
            pruner = GradualTicketPruning(
                model, sparsity=s, **when, seed=job.seed, calibration=job.calibration,
                proxy_every=job.proxy_every, movement=job.movement, reset_to=job.reset_to)
        else:
            pruner = GradualMagnitudePruning(model, sparsity=s, **when,
                                             scope="layer" if result.method == "gmp-layer"
                                             else "global")
        stats = h.train(model, after_step=pruner, description=f"train {result.method} s={s}")
        pruner.finish()
        extra = {"train_seconds": stats.seconds, "event_seconds": pruner.event_seconds}
        if isinstance(pruner, GradualTicketPruning):
            extra.update(pruner.summary())
        h.point(result, model, s, **extra)
    _grid_threshold(h, result)


INIT_GOALS = {"random": _random, "smart-ratio": _smart, "snip": _snip, "grasp": _grasp,
              "synflow": _synflow}
DATA_FREE = ("random", "smart-ratio", "synflow")  # their masks never look at the data
RUNNERS = {"bingo": _after_training, "magnitude": _after_training, "imp": _imp,
           "hybrid": _hybrid, **{m: _at_init(goal) for m, goal in INIT_GOALS.items()},
           **{m: _gradual for m in GRADUAL},
           **{m: _after_training for m in ESTIMATOR_ROWS}}


def find_masks(h: "Harness", method: str, sparsity: float,
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
    h = Harness(job, progress, log)
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
