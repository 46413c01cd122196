"""What every job shares (:class:`RunSetup`: the model, its recipe, the training, the
search's and the gradual schedule's knobs) and how a job reports (the environment, memory,
the figures by the dataset's metric). The prune job itself: :mod:`.prune_job`."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .. import __version__
from ..engine.proxies import DEFAULT_PROXY_EVERY
from ..engine.search import DEFAULT_CALIBRATION
from ..evidence.estimators import MEASURING_ESTIMATORS, SEARCH_ESTIMATORS
from ..evidence.ticket_search import TicketSearch
from ..pruning.schedule import CubicSchedule
from .data import DATASET_METRIC
from .device import device_environment, resolve_device
from .models import MODEL_DATASETS
from .recipes import gradual_calibration, gradual_candidates, recipe, search_calibration
from .training import LR_SCHEDULES, evaluate, make_optimizer, train

DEFAULT_VARIANTS = 8  # K when the estimator reads the random-subset searches


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
    event_candidates: Optional[Tuple[str, ...]] = None  # bingo-gradual's rankings (None:
                                          # the model's, recipes.gradual_candidates)

    def __post_init__(self):
        self._from_recipe = set()  # not a field: which values the recipe filled in
        for key, value in recipe(self.model).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
                self._from_recipe.add(key)

    @property
    def search_calibration(self) -> int:
        """The kept examples BINGO's search keeps for its one-shot estimator: ``--calibration``
        when given, else the model's (``recipes.search_calibration``; the one-shot baselines
        read the recipe's ``calibration``)."""
        given = "calibration" not in self._from_recipe
        return self.calibration if given else search_calibration(self.model)

    @property
    def gradual_calibration(self) -> int:
        """The kept examples ``bingo-gradual``'s events measure on: ``--calibration`` when
        given, else the model's (``recipes.gradual_calibration``)."""
        given = "calibration" not in self._from_recipe
        return self.calibration if given else gradual_calibration(self.model)

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
                     regression_every=self.regression_every,
                     calibration=self.search_calibration,
                     movement=self.movement)
        return TicketSearch(model, **{**knobs, **overrides})

    def make_gradual(self, model, sparsity: float, total_steps: int):
        """``bingo.GradualTicketPruning`` on ``model`` with this setup's schedule and search
        knobs (the kept examples, the seed, movement, the reset target)."""
        from ..pruning.gradual_ticket import GradualTicketPruning
        return GradualTicketPruning(model, sparsity=sparsity, total_steps=total_steps,
                                    start=self.gmp_start, end=self.gmp_end, every=self.gmp_every,
                                    seed=self.seed, calibration=self.gradual_calibration,
                                    reset_to=self.reset_to,
                                    candidates=self.gradual_candidates,
                                    # movement only refused (--no-movement): else the
                                    # pruner sums it where a candidate reads it
                                    **({} if self.movement else {"movement": False}),
                                    **({} if self.event_margin is None
                                       else {"margin": self.event_margin}))

    @property
    def gradual_candidates(self) -> Tuple[str, ...]:
        """bingo-gradual's candidate rankings: ``--event-candidates``, else the model's."""
        if self.event_candidates is not None:
            return tuple(self.event_candidates)
        return gradual_candidates(self.model)

    @property
    def margin_tag(self) -> str:
        """The events' margin and candidates in a run's name, where not the defaults."""
        tag = "" if self.event_margin is None else f"_m{self.event_margin}"
        if self.event_candidates is not None:
            tag += "_c" + "-".join(self.event_candidates)
        return tag

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
