"""The runners of ``bingo compare``, one per method family (how each meets a sparsity:
see :mod:`bingo.harness.compare`), on the shared harness (:mod:`bingo.harness.shared_run`), and ``find_masks``
(the masks a method chooses, for the sanity checks)."""
from __future__ import annotations

import copy
import time
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn

from ..engine.borrow import batchnorm_layers
from ..engine.targets import select_targets
from ..evidence.estimators import REFIT_AWARE
from ..pruning.gradual import RAMP_SHARE, ramp_from_scores
from ..pruning.batchnorm import after_one_shot, recalibrating
from ..pruning.gradual_ticket import GradualTicketPruning
from ..pruning.masks import current_masks, prune
from ..pruning.refit import prune_and_refit
from .baselines.budgets import smart_ratio
from .baselines.gmp import GradualMagnitudePruning
from .baselines.imp import imp as run_imp
from .baselines.layerwise import sparsegpt, uniform_budgets, wanda
from .baselines.scores import (
    grasp_scores,
    magnitude_scores,
    random_scores,
    snip_scores,
    synflow_scores,
)
from .compare_job import ESTIMATOR_ROWS, GRADUAL, is_bingo
from .shared_run import Harness, MethodResult
from .training import steps_per_epoch


class Trained(NamedTuple):
    """An after-training method's trained model and what prunes it."""
    model: nn.Module
    scores_at: Callable[[Optional[float]], Dict[str, torch.Tensor]]  # None: for a bisection
    reused: float  # seconds of a shared training run it reused (0 if it trained its own)
    recent: Callable[[], Tuple[torch.Tensor, torch.Tensor]]  # the last ``calibration``
    # (inputs, labels) its training saw: what ``--refit`` solves on (the labels decide
    # whether a refit is kept). Every run has the same data order, so the same images.


def _recalibrated(model: nn.Module, examples: torch.Tensor, fit=None) -> Dict[str, int]:
    """A one-shot row's BatchNorm statistics re-estimated on its kept examples, unless
    ``fit`` is a kept refit (``after_one_shot``); the point's record of it (nothing for a
    model without BatchNorm, or after a kept refit)."""
    layers = after_one_shot(model, examples, fit)
    return {"batchnorm_recalibrated": layers} if layers else {}


def _one_shot(h: Harness, result: MethodResult, trained: Trained) -> None:
    """Prune trained weights by ``scores_at(s)`` to each sparsity s, and/or down to the floor
    (``scores_at(None)``: the scores for a bisection); with ``refit``, each mask's kept
    weights are then solved against the trained model (bingo.refit). A model with
    BatchNorm then has its statistics re-estimated on the same examples (every row alike),
    unless its kept weights were refit (``after_one_shot``)."""
    job, model, scores_at = h.job, trained.model, trained.scores_at
    recent = (dict(zip(("examples", "labels"), trained.recent()))
              if job.refit or batchnorm_layers(model) else {})
    h.set_dense(result, model)
    for s in job.sparsities:
        m = copy.deepcopy(model)
        ramp, extra, fit = None, {}, None
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
        if recent:
            extra.update(_recalibrated(m, recent["examples"], fit))
        if job.finetune_epochs:
            h.train(m, epochs=job.finetune_epochs, after_step=ramp,
                    description=f"fine-tune {result.method}")
        if ramp is not None:
            ramp.finish()
        h.point(result, m, s, **extra)
    if job.min_accuracy is not None:
        m = copy.deepcopy(model)
        goal = dict(min_accuracy=job.min_accuracy, evaluate=h.val)
        if batchnorm_layers(m) and not job.refit:  # each trial with re-estimated statistics
            goal["evaluate"] = recalibrating(h.val, recent["examples"])
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
    if is_bingo(method):
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
        return Trained(model, scores_at, reused, search.kept_examples)
    model, recent, reused = h.dense()  # shared with the layer-wise rows (and BINGO's run)
    scores = magnitude_scores(model)
    return Trained(model, lambda s: scores, reused, lambda: recent)


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
    x, _ = h.scoring_batch()  # one example's shape, or a text example's ids
    example = x.shape[1:] if x.is_floating_point() else x[:1]
    return synflow_scores(model, example, s, iterations=h.job.synflow_iterations), s


def _hybrid(h: Harness, result: MethodResult) -> None:
    trained, _, reused = h.dense()
    result.seconds += reused
    h.set_dense(result, trained)
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
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in r.figures.items())
        h.log(f"  imp          round {r.round}: sparsity {r.sparsity:.3f}, {shown}, "
              f"{r.seconds:.1f}s")
    rounds = run_imp(model, train_fn, figures=h.figures, sparsities=job.sparsities,
                     min_accuracy=job.min_accuracy, rate=job.imp_rate, scope=job.imp_scope,
                     rewind_step=job.rewind_step, max_rounds=job.imp_rounds,
                     on_round=on_round)
    result.history = [r.record() for r in rounds]
    dense = rounds[0].figures
    result.dense_test_accuracy = dense.get("test_accuracy")
    result.dense_val_accuracy = dense.get("val_accuracy")
    result.dense_val_loss = dense.get("val_loss")
    reached = [s for s in job.sparsities if s <= rounds[-1].sparsity + 1e-3]
    for s in reached:  # the round that pruned to s (targets are hit to rounding)
        r = min(rounds[1:], key=lambda r: abs(r.sparsity - s))
        result.points.append({"sparsity": s, "zeros": r.sparsity, **r.figures})
    if len(reached) < len(job.sparsities):
        h.log(f"  imp          stopped after --imp-rounds {job.imp_rounds} at sparsity "
              f"{rounds[-1].sparsity:.3f}: no point at "
              f"{', '.join(f'{s:.3f}' for s in job.sparsities if s not in reached)} "
              f"(raise --imp-rounds or --imp-rate)")
    if job.min_accuracy is not None:
        ok = [r for r in rounds[1:] if r.val_accuracy >= job.min_accuracy]
        best = max(ok, key=lambda r: r.sparsity) if ok else None
        result.threshold = None if best is None else {
            "sparsity": best.sparsity, **best.figures, "how": "rounds until validation falls below"}


def _gradual(h: Harness, result: MethodResult) -> None:
    """Prune during the one training run (one run per sparsity): ``gmp`` by global
    magnitude, ``gmp-layer`` each layer alike, ``gmp-lamp`` by global LAMP scores,
    ``bingo-gradual`` by what its search
    measured (bingo.pruning.gradual_ticket), all on the same cubic schedule."""
    job = h.job
    total = steps_per_epoch(h.train_split, job.batch_size) * job.epochs
    when = dict(total_steps=total, start=job.gmp_start, end=job.gmp_end, every=job.gmp_every)
    if job.min_accuracy is not None and not job.sparsities:
        raise ValueError(f"{result.method} prunes during training to a sparsity fixed in "
                         f"advance: give --sparsities (the floor then picks among them)")
    for s in job.sparsities:
        model = h.fresh()
        if result.method == "bingo-gradual":
            pruner = job.make_gradual(model, s, total)
        else:
            scope = {"gmp-layer": "layer", "gmp-lamp": "lamp"}.get(result.method, "global")
            pruner = GradualMagnitudePruning(model, sparsity=s, **when, scope=scope)
        stats = h.train(model, after_step=pruner, description=f"train {result.method} s={s}")
        pruner.finish()
        extra = {"train_seconds": stats.seconds, "event_seconds": pruner.event_seconds}
        if isinstance(pruner, GradualTicketPruning):
            extra.update(pruner.summary())
        h.point(result, model, s, **extra)
    _grid_threshold(h, result)


def _layerwise(h: Harness, result: MethodResult) -> None:
    """Wanda or SparseGPT on the trained dense model (one training run shared by both),
    from the last ``calibration`` examples its training saw; uniform layer sparsity, the
    last layer dense where the goal allows it."""
    model, (examples, _), reused = h.dense()
    result.seconds += reused
    h.set_dense(result, model)
    prune_fn = wanda if result.method == "wanda" else sparsegpt
    for s in h.job.sparsities:
        m = copy.deepcopy(model)
        budgets = uniform_budgets(m, s)
        start = time.perf_counter()
        prune_fn(m, examples, s, budgets)
        h.point(result, m, s, prune_seconds=time.perf_counter() - start,
                last_layer_dense=list(budgets.values())[-1] == 0.0,
                **_recalibrated(m, examples))
    _grid_threshold(h, result)


INIT_GOALS = {"random": _random, "smart-ratio": _smart, "snip": _snip, "grasp": _grasp,
              "synflow": _synflow}
DATA_FREE = ("random", "smart-ratio", "synflow")  # their masks never look at the data
RUNNERS = {"bingo": _after_training, "magnitude": _after_training, "imp": _imp,
           "hybrid": _hybrid, **{m: _at_init(goal) for m, goal in INIT_GOALS.items()},
           **{m: _gradual for m in GRADUAL}, "wanda": _layerwise, "sparsegpt": _layerwise,
           **{m: _after_training for m in ESTIMATOR_ROWS}}


def find_masks(h: "Harness", method: str, sparsity: float,
               search_data: Optional[Callable] = None) -> Dict[str, torch.Tensor]:
    """The keep-masks ``method`` chooses at ``sparsity`` on ``h``'s training data (what the
    sanity checks perturb); ``search_data`` as in :func:`train_and_score`."""
    if is_bingo(method) or method == "magnitude":
        trained = train_and_score(h, method, search_data)
        model = copy.deepcopy(trained.model)  # a shared BINGO run stays unpruned for the next row
        prune(model, trained.scores_at(sparsity), sparsity=sparsity)
    elif method == "hybrid":
        model = copy.deepcopy(h.dense()[0])
        prune(model, magnitude_scores(model), sparsity=_smart_budget(model, sparsity))
    elif method == "imp":
        model = h.fresh()
        run_imp(model, lambda m, after_step=None: h.train(m, after_step=after_step,
                                                          description="train imp round"),
                figures=h.figures, sparsities=[sparsity], rate=h.job.imp_rate,
                scope=h.job.imp_scope, rewind_step=h.job.rewind_step)
    else:
        model = h.fresh()
        scores, goal = INIT_GOALS[method](h, model, sparsity)
        prune(model, scores, sparsity=goal)
    return current_masks(model, [t for t in h.target_names()])
