"""The prune job behind ``bingo prune``: train with ticket search, prune in one shot, report.

A job is named by its hyperparameters (:class:`PruneJob`); its result is a flat
JSON-able dict, so runs can be compared and reproduced from the file alone.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import torch

from .. import __version__
from ..engine.borrow import batchnorm_layers
from ..engine.proxies import DEFAULT_PROXY_EVERY
from ..engine.search import DEFAULT_CALIBRATION
from ..evidence.estimators import MEASURING_ESTIMATORS, REFIT_AWARE, SEARCH_ESTIMATORS
from ..evidence.ticket_search import TicketSearch
from ..pruning.masks import prune
from ..pruning.batchnorm import recalibrate_batchnorm, recalibrating
from ..pruning.refit import prune_and_refit
from ..pruning.schedule import CubicSchedule
from .data import DATASET_METRIC, load_dataset
from .device import device_environment, resolve_device
from .models import MODEL_DATASETS, build_model
from .recipes import gradual_calibration, recipe
from .training import LR_SCHEDULES, evaluate, make_optimizer, steps_per_epoch, train

DEFAULT_MIN_ACCURACY = 0.90  # the paper's protocol: prune until accuracy would fall below 90%
DEFAULT_VARIANTS = 8  # K when the estimator reads the random-subset searches
SCHEDULES = ("one-shot", "gradual")


@dataclass
class RunSetup:
    """What every job shares: the data, the model and its training, BINGO's search."""

    model: str = "lenet300"
    dataset: str = "mnist"
    data_dir: Optional[str] = None
    # None: the model's recipe (bingo.harness.recipes) fills epochs, batch_size, optimizer,
    # lr, weight_decay, lr_schedule and calibration
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    optimizer: Optional[str] = None    # adam, adamw or sgd (momentum 0.9)
    lr: Optional[float] = None
    weight_decay: Optional[float] = None  # L2 (adam, sgd) or decoupled (adamw)
    lr_schedule: Optional[str] = None  # constant, cosine or warmup-cosine (training.lr_factor)
    variants: Optional[int] = None     # K; None: DEFAULT_VARIANTS if an estimator reads them
    fraction: float = 0.05
    metric: str = "loss"
    granularity: str = "weight"
    rule: str = "paper"
    reset_to: str = "init"
    proxy_every: int = DEFAULT_PROXY_EVERY  # fisher, reset every n steps; movement always
    movement: bool = True              # collect the movement proxy (its pass every step)
    regression_every: int = 0          # feed bingo.engine.regression every n steps (0: off)
    calibration: Optional[int] = None  # recent training examples kept (calibrated, units)
    estimator: str = "calibrated"  # how the search's evidence becomes scores (bingo.evidence.estimators)
    refit: bool = False                # after one-shot pruning, refit kept weights (bingo.refit)
    seed: int = 0
    device: str = "cpu"                # or cuda / cuda:N: data and models there (device.py)
    train_limit: Optional[int] = None  # use only the first N training images (quick runs, tests)
    gmp_start: float = 0.1             # pruning during training (gmp, bingo-gradual, prune
    gmp_end: float = 0.75              # --schedule gradual): Zhu & Gupta's cubic schedule,
    gmp_every: int = 50                # first and last event as fractions of the steps, and
                                       # the steps between events (bingo.pruning.schedule)
    event_margin: Optional[float] = None  # bingo-gradual: standard errors a candidate must
                                          # beat magnitude's mask by (None: the default, 2)

    def __post_init__(self):
        self._from_recipe = set()  # not a field: which values the recipe filled in
        for key, value in recipe(self.model).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
                self._from_recipe.add(key)

    @property
    def gradual_calibration(self) -> int:
        """The kept examples ``bingo-gradual``'s events measure on: ``--calibration`` when
        given, else the model's gradual default (``recipes.gradual_calibration``)."""
        if "calibration" in self._from_recipe:
            return gradual_calibration(self.model)
        return self.calibration

    @property
    def torch_device(self) -> torch.device:
        """The device the job's data and models live on (checked)."""
        return resolve_device(self.device)

    @property
    def metric_name(self) -> str:
        """What the job's runs report: ``accuracy`` (images) or ``loss`` (text)."""
        return DATASET_METRIC.get(self.dataset, "accuracy")

    def check_data(self) -> None:
        """Fail before any work when the model cannot read the dataset's inputs."""
        takes = MODEL_DATASETS.get(self.model)
        if takes is not None and self.dataset not in takes:
            fitting = sorted(m for m, d in MODEL_DATASETS.items() if self.dataset in d)
            raise ValueError(f"model {self.model} reads {' or '.join(takes)} inputs, not "
                             f"{self.dataset}: pass --dataset {takes[0]}, or a {self.dataset} "
                             f"model ({', '.join(fitting) or 'none yet'})")
        if self.metric_name == "loss":
            self.check_loss_metric()
        self.torch_device  # a device this machine can run, or the fix
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.lr_schedule!r}; choose one "
                             f"of {LR_SCHEDULES}")

    def check_loss_metric(self) -> None:
        """What a text run (the loss metric) does not take yet."""
        if self.refit:
            raise ValueError(f"--refit is not measured on {self.dataset} yet: drop it")
        if getattr(self, "min_accuracy", None) is not None:
            raise ValueError(f"{self.dataset} reports validation loss, not accuracy: "
                             f"--min-accuracy does not apply; give the sparsity to prune to "
                             f"(--sparsity / --sparsities)")

    def fit(self, model, split, *, after_step=None, epochs: Optional[int] = None,
            progress: bool = True, description: str = "train"):
        """Train ``model`` on ``split`` with this setup's optimizer, weight decay, schedule,
        batch size and seed (the data order): the one way every job trains."""
        optimizer = make_optimizer(self.optimizer, model.parameters(), self.lr,
                                   weight_decay=self.weight_decay)
        return train(model, split, epochs=epochs or self.epochs, batch_size=self.batch_size,
                     optimizer=optimizer, seed=self.seed, after_step=after_step,
                     progress=progress, description=description,
                     lr_schedule=self.lr_schedule)

    def schedule_for(self, sparsity: float, total_steps: int) -> CubicSchedule:
        """The cubic schedule to ``sparsity`` over ``total_steps`` (checks the knobs)."""
        return CubicSchedule(sparsity, total_steps, self.gmp_start, self.gmp_end,
                             self.gmp_every)

    def variants_for(self, estimators: Sequence[str]) -> int:
        """K for a run scored by ``estimators``: as given, else DEFAULT_VARIANTS when one of
        them reads the random-subset searches (search, regression, units) and 0 otherwise
        (the calibrated default uses only the proxies and the kept examples, so searching
        would cost time and change nothing)."""
        if self.variants is not None:
            return self.variants
        return DEFAULT_VARIANTS if any(e in SEARCH_ESTIMATORS for e in estimators) else 0

    def make_search(self, model, estimators: Optional[Sequence[str]] = None,
                    **overrides) -> TicketSearch:
        """BINGO's ticket search on ``model`` with this setup's knobs (``overrides`` win),
        for scoring by ``estimators`` (default: the setup's estimator)."""
        estimators = (self.estimator,) if estimators is None else estimators
        knobs = dict(fraction=self.fraction, variants=self.variants_for(estimators),
                     metric=self.metric, granularity=self.granularity, rule=self.rule,
                     seed=self.seed, reset_to=self.reset_to, proxy_every=self.proxy_every,
                     regression_every=self.regression_every, calibration=self.calibration,
                     movement=self.movement)
        return TicketSearch(model, **{**knobs, **overrides})

    def make_gradual(self, model, sparsity: float, total_steps: int):
        """``bingo.GradualTicketPruning`` on ``model`` with this setup's schedule and search
        knobs (the kept examples, the seed, movement, the reset target)."""
        from ..pruning.gradual_ticket import GradualTicketPruning
        return GradualTicketPruning(model, sparsity=sparsity, total_steps=total_steps,
                                    start=self.gmp_start, end=self.gmp_end, every=self.gmp_every,
                                    seed=self.seed, calibration=self.gradual_calibration,
                                    movement=self.movement, reset_to=self.reset_to,
                                    **({} if self.event_margin is None
                                       else {"margin": self.event_margin}))

    @property
    def margin_tag(self) -> str:
        """The events' margin in a run's name, where it is not the default."""
        return "" if self.event_margin is None else f"_m{self.event_margin}"

    def check_estimators(self, estimators: Sequence[str]) -> None:
        """Fail before training when an estimator asked for would get no searches to read."""
        starved = [e for e in estimators if e in SEARCH_ESTIMATORS and self.variants == 0]
        if starved:
            raise ValueError(f"the {starved[0]} estimator reads the random-subset searches, and "
                             f"--variants 0 runs none: give --variants K (K >= 1; 8 if omitted)")
        moving = [e for e in estimators if "movement" in e]
        if moving and not self.movement:
            raise ValueError(f"the {moving[0]} estimator reads the movement proxy, and "
                             f"--no-movement does not collect it: drop --no-movement")
        measured = [e for e in estimators if e in MEASURING_ESTIMATORS]
        if measured and self.calibration == 0:
            raise ValueError(f"the {measured[0]} estimator measures masks on the most recent "
                             f"training examples, and --calibration 0 keeps none: give "
                             f"--calibration N ({DEFAULT_CALIBRATION} if omitted)")
        if "regression" in estimators and not (self.regression_every
                                               and self.variants_for(["regression"]) >= 2
                                               and self.granularity == "weight"):
            raise ValueError("the regression estimator fits the searches: give "
                             "--regression-every N (e.g. 4), --variants >= 2 and weight "
                             "granularity")
        if self.refit and self.calibration == 0:
            raise ValueError("--refit solves the kept weights on the most recent training "
                             "examples, and --calibration 0 keeps none: give --calibration N "
                             f"({DEFAULT_CALIBRATION} if omitted)")


@dataclass
class PruneJob(RunSetup):
    """Hyperparameters of one BINGO prune run (defaults: the main MNIST job)."""

    sparsity: Optional[float] = None
    min_accuracy: Optional[float] = None
    max_loss_increase: Optional[float] = None  # text: prune while val loss <= dense + this
    scope: str = "global"
    schedule: str = "one-shot"         # or "gradual": prune during the run (bingo.pruning.gradual_ticket)

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
                f"{goal}{'_refit' if self.refit else ''}_seed{self.seed}")


def environment(device: torch.device = torch.device("cpu")) -> Dict[str, Any]:
    return {
        "bingo": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        **device_environment(device),
    }


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a nested state (dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(job: RunSetup, data, model, prefix: str) -> Dict[str, Optional[float]]:
    """A run's figures of ``model`` under ``prefix`` (dense / pruned): test and validation
    accuracy (and CIFAR-10's exact test images') for images, the validation loss for text;
    each None when ``model`` is (a figure the run has no model for)."""
    if job.metric_name == "loss":
        splits = {f"{prefix}_val_loss": (data.val, "loss")}
    else:
        splits = {f"{prefix}_accuracy": (data.test, "accuracy"),
                  f"{prefix}_val_accuracy": (data.val, "accuracy")}
        if data.test_exact is not None:
            splits[f"{prefix}_exact_accuracy"] = (data.test_exact, "accuracy")
    return {k: None if model is None else evaluate(model, split, metric)
            for k, (split, metric) in splits.items()}


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
    if goal["evaluate"] is not None and kept_inputs is not None and batchnorm_layers(model):
        goal["evaluate"] = recalibrating(goal["evaluate"], kept_inputs)
    fit = None
    if job.refit:  # on the search's kept examples: what a training loop already holds
        examples, labels = search.kept_examples()  # every rank's, under torchrun
        report, fit = prune_and_refit(model, scores, examples, labels=labels, **goal)
    else:
        report = prune(model, scores, **goal)
    norms = recalibrate_batchnorm(model, kept_inputs) if kept_inputs is not None else 0
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
