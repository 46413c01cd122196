"""The prune job behind ``bingo prune``: train with ticket search, prune in one shot (or
during the run, ``schedule="gradual"``), report.

A job is named by its hyperparameters (:class:`PruneJob`); its result is a flat
JSON-able dict, so runs can be compared and reproduced from the file alone.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch

from ..engine.borrow import batchnorm_layers
from ..evidence.estimators import REFIT_AWARE
from ..pruning.batchnorm import after_one_shot, recalibrating
from ..pruning.masks import prune
from ..pruning.refit import prune_and_refit
from .data import load_dataset
from .jobs import RunSetup, environment, measured, peak_rss_mb, tensor_bytes
from .models import build_model
from .training import evaluate, steps_per_epoch

DEFAULT_MIN_ACCURACY = 0.90  # the paper's protocol: prune until accuracy would fall below 90%
SCHEDULES = ("one-shot", "gradual")


@dataclass
class PruneJob(RunSetup):
    """Hyperparameters of one BINGO prune run (defaults: the main MNIST job)."""

    sparsity: Optional[float] = None
    min_accuracy: Optional[float] = None
    max_loss_increase: Optional[float] = None  # text: prune while val loss <= dense + this
    scope: str = "global"
    schedule: str = "one-shot"  # or "gradual": during the run (bingo.pruning.gradual_ticket)

    def target(self) -> Dict[str, Optional[float]]:
        self.check_data()
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        goals = [n for n, v in (("--sparsity", self.sparsity),
                                ("--min-accuracy", self.min_accuracy),
                                ("--max-loss-increase", self.max_loss_increase))
                 if v is not None]
        if len(goals) > 1:
            raise ValueError(f"give one of --sparsity, --min-accuracy or --max-loss-increase, "
                             f"not {' and '.join(goals)}")
        if self.max_loss_increase is not None:
            if self.metric_name != "loss":
                raise ValueError(f"{self.dataset} reports accuracy: --max-loss-increase is for "
                                 f"the text datasets; give --min-accuracy (a floor) instead")
            if not self.max_loss_increase > 0:
                raise ValueError(f"--max-loss-increase must be > 0 (nats of validation loss "
                                 f"above the dense model's), got {self.max_loss_increase}")
        if self.schedule == "gradual":
            if self.sparsity is None:
                raise ValueError("--schedule gradual prunes during training to a sparsity "
                                 "fixed in advance: give --sparsity (e.g. 0.95); an accuracy "
                                 "floor or a loss ceiling needs the one-shot schedule")
            if self.variants:
                raise ValueError("--schedule gradual measures candidate masks at its events "
                                 "and runs no random-subset variants: drop --variants")
            if self.refit or self.scope != "global" or self.estimator != "calibrated":
                raise ValueError("--schedule gradual chooses its masks at each pruning event "
                                 "by measured loss: --refit, --scope and --estimator belong "
                                 "to the one-shot schedule; drop them")
            self.schedule_for(self.sparsity, 1000)  # its own checks, before training
        if not goals:
            if self.metric_name == "loss":
                raise ValueError(f"{self.dataset} reports validation loss, which has no "
                                 f"default ceiling: give --sparsity (e.g. 0.5) or "
                                 f"--max-loss-increase (e.g. 0.05)")
            return {"sparsity": None, "min_accuracy": DEFAULT_MIN_ACCURACY,
                    "max_loss_increase": None}
        return {"sparsity": self.sparsity, "min_accuracy": self.min_accuracy,
                "max_loss_increase": self.max_loss_increase}

    @property
    def name(self) -> str:
        goal = (f"s{self.sparsity}" if self.sparsity is not None
                else f"loss+{self.max_loss_increase}" if self.max_loss_increase is not None
                else f"acc{self.target()['min_accuracy']}")
        if self.schedule == "gradual":
            return (f"bingo-gradual_{self.model}_{self.dataset}_{self.optimizer}{self.lr}_"
                    f"e{self.epochs}_b{self.batch_size}_s{self.sparsity}_gmp{self.gmp_start}-"
                    f"{self.gmp_end}-{self.gmp_every}_c{self.gradual_calibration}"
                    f"{self.margin_tag}"
                    f"{'' if self.movement else '_nomove'}_seed{self.seed}")
        return (f"bingo_{self.model}_{self.dataset}_e{self.epochs}_"
                f"k{self.variants_for([self.estimator])}_"
                f"p{self.fraction}_{self.metric}_{self.granularity}_{self.rule}_{self.reset_to}_"
                f"{self.estimator}{'' if self.movement else '_nomove'}_r{self.regression_every}_"
                f"{goal}_c{self.search_calibration}{'_refit' if self.refit else ''}"
                f"_seed{self.seed}")


def run_prune_job(job: PruneJob, progress: bool = True) -> Dict[str, Any]:
    """Train ``job.model`` with ticket search, prune by significance, evaluate on test."""
    wall = time.perf_counter()
    target = job.target()  # validates before any work
    job.check_estimators([job.estimator])
    data = load_dataset(job.dataset, job.data_dir).to(job.torch_device)
    train_split = data.train.subset(job.train_limit)
    torch.manual_seed(job.seed)
    model = build_model(job.model).to(job.torch_device)  # the CPU's initial weights
    if job.schedule == "gradual":
        return _run_gradual(job, model, data, train_split, wall, progress)
    search = job.make_search(model)
    stats = job.fit(model, train_split, after_step=search.step, progress=progress,
                    description=f"train+search {job.model}")
    dense = measured(job, data, model, "dense")
    rss_trained = peak_rss_mb()
    scoring = time.perf_counter()
    scores = search.significance(job.estimator, sparsity=target["sparsity"],
                                 refit=job.refit and job.estimator in REFIT_AWARE)
    score_seconds = time.perf_counter() - scoring
    kept = tensor_bytes(search.calibration_batch()) if job.calibration else 0
    memory = {"parameter_mb": tensor_bytes(dict(model.state_dict())) / 2**20,
              "search_state_mb": (tensor_bytes(search.state_dict()) - kept) / 2**20,
              "kept_examples_mb": kept / 2**20, "peak_rss_mb_after_training": rss_trained,
              "peak_rss_mb_after_scoring": peak_rss_mb()}
    goal = dict(sparsity=target["sparsity"], min_accuracy=target["min_accuracy"],
                evaluate=(lambda m: evaluate(m, data.val, "accuracy"))
                if job.metric_name == "accuracy" else None, scope=job.scope)
    if target["max_loss_increase"] is not None:  # a ceiling on the validation loss
        goal.update(max_loss=dense["dense_val_loss"] + target["max_loss_increase"],
                    evaluate=lambda m: evaluate(m, data.val, "loss"))
    kept_inputs = search.kept_examples()[0] if job.calibration else None  # every rank's
    if (goal["evaluate"] is not None and kept_inputs is not None and batchnorm_layers(model)
            and not job.refit):
        goal["evaluate"] = recalibrating(goal["evaluate"], kept_inputs)
    fit = None
    if job.refit:  # on the search's kept examples: what a training loop already holds
        examples, labels = search.kept_examples()  # every rank's, under torchrun
        report, fit = prune_and_refit(model, scores, examples, labels=labels, **goal)
    else:
        report = prune(model, scores, **goal)
    norms = after_one_shot(model, kept_inputs, fit) if kept_inputs is not None else 0
    return {
        "method": "bingo",
        "name": job.name,
        "model": job.model,
        "dataset": job.dataset,
        "seed": job.seed,
        "sparsity": report.sparsity,
        **dense, **measured(job, data, model, "pruned"),
        "refit": fit.to_dict() if fit is not None else None,
        "batchnorm_recalibrated": norms,
        "per_layer": {k: v.sparsity for k, v in report.layers.items()},
        "train_seconds": stats.seconds - stats.hook_seconds,
        "search_seconds": search.search_seconds,
        "score_seconds": score_seconds,
        "prune_seconds": report.seconds,
        "total_seconds": time.perf_counter() - wall,
        "train_steps": stats.steps,
        "searches": search.totals.searches,
        "prune_evaluations": report.evaluations,
        "memory": memory,
        "config": {**asdict(job), **target, "variants": search.variants,
                   "calibration": search.calibration,
                   "effective_fraction": search.effective_fraction, "backend": search.backend},
        "calibration": search.last_calibration.to_dict() if search.last_calibration else None,
        "environment": environment(job.torch_device),
    }


def _run_gradual(job: PruneJob, model, data, train_split, wall: float,
                 progress: bool) -> Dict[str, Any]:
    """``--schedule gradual``: prune during the one training run (bingo.pruning.gradual_ticket)."""
    pruner = job.make_gradual(model, job.sparsity,
                              steps_per_epoch(train_split, job.batch_size) * job.epochs)
    stats = job.fit(model, train_split, after_step=pruner, progress=progress,
                    description=f"train+prune {job.model}")
    report = pruner.finish()
    return {
        "method": "bingo-gradual", "name": job.name, "model": job.model,
        "dataset": job.dataset, "seed": job.seed, "sparsity": report.sparsity,
        **measured(job, data, None, "dense"),
        **measured(job, data, model, "pruned"),
        "refit": None, "per_layer": {k: v.sparsity for k, v in report.layers.items()},
        "train_seconds": stats.seconds - stats.hook_seconds,
        "search_seconds": pruner.search.search_seconds, "score_seconds": 0.0,
        "prune_seconds": pruner.event_seconds, "total_seconds": time.perf_counter() - wall,
        "train_steps": stats.steps, "events": pruner.events, "chosen": pruner.chosen,
        "vetoed": pruner.vetoed,
        "config": {**asdict(job), "variants": 0, "calibration": job.gradual_calibration,
                   "backend": pruner.search.backend},
        "environment": environment(job.torch_device),
    }
