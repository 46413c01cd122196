"""``BingoCallback``: BINGO as a Hugging Face ``TrainerCallback``.

The search is built on the model when training begins (the schedule's length is
``state.max_steps``) and steps in ``on_optimizer_step``: the weights have just been
updated and the step's gradients are still in ``.grad`` (the Trainer zeroes them only
afterwards, before ``on_step_end``), which is where the plain loop calls it. The
callback has no batch, so a forward pre-hook keeps the inputs of the training forwards
since the last optimizer step (``input_ids`` and ``labels``: every micro-batch of a step
under gradient accumulation). The kept examples are measured with the causal LM's own
loss (next-token cross-entropy, ``labels`` shifted inside, -100 ignored).

Default targets: the weights of every ``nn.Linear`` and ``transformers`` ``Conv1D`` (GPT-2's
attention and MLP) that are parameters under their own name (a tied ``lm_head`` is the
embedding's, and is left alone). Under ``torchrun`` the search spans the ranks (tested on
one process only so far).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .kernels_name import prefer_installed_kernels

prefer_installed_kernels()  # before transformers, which imports the name `kernels`
try:
    from transformers import TrainerCallback
    from transformers.pytorch_utils import Conv1D
except ImportError as err:  # an optional extra
    raise ImportError("bingo.integrations.transformers needs the transformers package: "
                      "pip install -e '.[transformers]' (or pip install transformers)") from err
import torch
import torch.nn.functional as F
from torch import nn

from ..pruning.gradual_ticket import DEFAULT_CANDIDATES
from ..pruning.masks import PruneReport
from .session import PruningSession


def causal_lm_loss(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy of a causal LM's output (``.logits`` or a
    tensor) against ``labels`` shifted by one, positions labelled -100 ignored: what the
    model's own ``labels=`` loss computes."""
    logits = outputs.logits if hasattr(outputs, "logits") else outputs
    return F.cross_entropy(logits[..., :-1, :].flatten(0, -2).float(),
                           labels[..., 1:].flatten(), ignore_index=-100)


def default_include(model: nn.Module) -> List[str]:
    """The weights of the model's Linear and Conv1D modules, under their own names."""
    params = dict(model.named_parameters())
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, Conv1D)) and f"{name}.weight" in params]


class BingoCallback(TrainerCallback):
    """Prune the Trainer's model to ``amount`` sparsity during (or at the end of) training.

    Args: as :class:`bingo.integrations.lightning.BingoPruning` (``amount``, ``schedule``,
    ``start``/``end``/``every``, ``candidates``, ``estimator``, ``make_pruning_permanent``,
    ``verbose``, ``**search_options``; ``include`` defaults to :func:`default_include`,
    ``loss_fn`` to :func:`causal_lm_loss`).
    """

    def __init__(self, amount: float, *, schedule: str = "gradual", start: float = 0.1,
                 end: float = 0.75, every: int = 50,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES,
                 estimator: str = "calibrated", make_pruning_permanent: bool = True,
                 verbose: int = 0, **search_options: Any):
        search_options.setdefault("loss_fn", causal_lm_loss)
        self.session = PruningSession(amount, schedule=schedule, start=start, end=end,
                                      every=every, candidates=candidates, estimator=estimator,
                                      **search_options)
        self.make_pruning_permanent = make_pruning_permanent
        self.verbose = verbose
        self._batches: List[Dict[str, torch.Tensor]] = []  # since the last optimizer step
        self._hook = None

    @property
    def report(self) -> Optional[PruneReport]:
        """The final PruneReport (the zeros really in the weights), once training ended."""
        return self.session.report

    def _keep_inputs(self, module: nn.Module, args: tuple, kwargs: Dict[str, Any]) -> None:
        if not (module.training and torch.is_grad_enabled()):  # a measurement, an eval
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        labels = kwargs.get("labels")
        if ids is None or labels is None:
            raise ValueError("BingoCallback reads each training batch's input_ids and labels "
                             "(a causal LM's own labels=): give the model both")
        self._batches.append({"input_ids": ids.detach(), "labels": labels.detach()})

    def on_train_begin(self, args, state, control, model: nn.Module = None, **kwargs):
        if "include" not in self.session.search_options:
            self.session.search_options["include"] = default_include(model)
        self.session.begin(model, int(state.max_steps))
        self.session.track(kwargs.get("optimizer"))
        self._hook = model.register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if not self._batches:
            raise RuntimeError("BingoCallback saw an optimizer step without a training "
                               "forward of the model it was given")
        ids = torch.cat([b["input_ids"] for b in self._batches])
        labels = torch.cat([b["labels"] for b in self._batches])
        self._batches = []
        self.session.step(ids, labels)

    def on_train_end(self, args, state, control, **kwargs):
        if self._hook is not None:
            self._hook.remove()
        self.session.finish(self.make_pruning_permanent)
        if self.verbose and state.is_world_process_zero:
            print(self.session.summary())
