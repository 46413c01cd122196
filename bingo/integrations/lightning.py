"""``BingoPruning``: BINGO as a PyTorch Lightning ``Callback``, next to Lightning's own
``ModelPruning`` (the same ``amount``, ``make_pruning_permanent`` and ``verbose``).

The search is built on the LightningModule when the fit starts (the schedule's length is
``trainer.estimated_stepping_batches``), steps after each optimizer step
(``on_train_batch_end``, where the step's gradients are still in ``.grad``; batches that
only accumulate gradients are skipped), and prunes on the cubic schedule during the run
(``schedule="gradual"``) or once when training ends (``schedule="end"``). Under
``strategy="ddp"`` or ``"ddp_spawn"`` the search spans the ranks Lightning started:
the same masks on every rank (:mod:`bingo.engine.distributed`).

The module's ``forward(x)`` must be the network's (the search calls it on the kept
examples), and a batch must be ``(inputs, targets)`` or ``batch_fn(batch)`` must make it so.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import rank_zero_info
except ImportError as err:  # an optional extra
    raise ImportError("bingo.integrations.lightning needs the lightning package: "
                      "pip install -e '.[lightning]' (or pip install lightning)") from err
import torch

from ..pruning.gradual_ticket import DEFAULT_CANDIDATES
from ..pruning.masks import PruneReport
from .session import PruningSession

BatchFn = Callable[[Any], Tuple[torch.Tensor, torch.Tensor]]


def inputs_and_targets(batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch's (inputs, targets): its first two entries."""
    return batch[0], batch[1]


class BingoPruning(pl.Callback):
    """Prune the LightningModule to ``amount`` sparsity during (or at the end of) ``fit``.

    Args:
        amount: the final share of the prunable weights removed (0.9: 90%).
        schedule: "gradual" (events from ``start`` to ``end`` of the steps, one every
            ``every``, each chosen by measured loss among ``candidates``) or "end" (score
            with ``estimator`` when training ends, then prune once).
        make_pruning_permanent: at the end, fold the masks into the weights
            (``torch.nn.utils.prune.remove``); the pruned weights stay zeros.
        verbose: 1 prints the final sparsity on rank 0.
        batch_fn: ``batch_fn(batch) -> (inputs, targets)`` (default: the batch itself).
        **search_options: for the ``TicketSearch`` (``calibration``, ``seed``, ``include``,
            ``loss_fn``, ...).
    """

    def __init__(self, amount: float, *, schedule: str = "gradual", start: float = 0.1,
                 end: float = 0.75, every: int = 50,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES,
                 estimator: str = "calibrated", make_pruning_permanent: bool = True,
                 verbose: int = 0, batch_fn: Optional[BatchFn] = None, **search_options: Any):
        self.session = PruningSession(amount, schedule=schedule, start=start, end=end,
                                      every=every, candidates=candidates, estimator=estimator,
                                      **search_options)
        self.make_pruning_permanent = make_pruning_permanent
        self.verbose = verbose
        self.batch_fn = batch_fn or inputs_and_targets  # picklable, for ddp_spawn
        self._steps = 0  # optimizer steps seen

    @property
    def report(self) -> Optional[PruneReport]:
        """The final PruneReport (the zeros really in the weights), once training ended."""
        return self.session.report

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("BingoPruning needs a finite run to lay out its schedule: give "
                             "the Trainer max_epochs or max_steps")
        self.session.begin(pl_module, int(total))
        self._steps = trainer.global_step

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if len(trainer.optimizers) == 1:  # configured by now: the pruned weights' moments
            self.session.track(trainer.optimizers[0])

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._steps:  # gradients accumulated, no optimizer step
            return
        self._steps = trainer.global_step
        inputs, targets = self.batch_fn(batch)
        self.session.step(inputs, targets)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.session.finish(self.make_pruning_permanent)
        if self.verbose:
            rank_zero_info(self.session.summary())
