"""BINGO during the one training run: ``GradualTicketPruning`` runs a TicketSearch after
each training step and prunes on Zhu & Gupta's cubic schedule, letting what the search
measured decide each event.

At an event to sparsity s every candidate ranking (the gradient proxies the search folds
in and their mixtures with magnitude, :mod:`bingo.evidence.candidates`) proposes the mask that
prunes the lowest-ranked kept weights to s over all layers at once, so each ranking also
proposes its own layer budgets; each proposal is measured exactly on the search's kept
training examples (the model borrowed: eval mode, RNG saved, the candidate mask
substituted for the ``weight_mask`` buffers in a functional call) and the lowest loss
wins. Magnitude is always a candidate, so an event picks gradual magnitude pruning's own
mask whenever nothing measured better.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..engine.borrow import Borrowed
from ..evidence.candidates import MIXTURES, PROXY_ESTIMATORS, stable_ranks
from ..evidence.ticket_search import TicketSearch
from .schedule import CubicSchedule, Masks, ScheduledPruning, lowest

# Measured (docs/results.md, *Pruning during the training run*): with fisher or mag+fisher
# among them the events pick those (the lowest loss right after the event) and the run
# ends 0.1-0.5 points lower under SGD; mag+movement wins events only under Adam.
DEFAULT_CANDIDATES = ("magnitude", "mag+movement")


class GradualTicketPruning(ScheduledPruning):
    """Prune ``model`` to ``sparsity`` during its training run.

    Call ``step(x, y)`` after each ``optimizer.step()`` (before ``zero_grad``): it runs the
    search step on the batch and prunes at the schedule's events; ``finish()`` returns the
    :class:`~bingo.PruneReport` (the zeros really in the weights).

    Args:
        sparsity: the final share of the prunable weights removed.
        total_steps: optimizer steps of the whole run (the schedule's time axis).
        start, end: the schedule's first and last event, as fractions of total_steps.
        every: steps between two events.
        candidates: the rankings an event chooses between by measured loss (default
            magnitude and its mixture with movement; any of magnitude, fisher, reset,
            movement and their ``mag+`` mixtures may be named); ``("magnitude",)`` is
            gradual magnitude pruning with the search's overhead.
        free_dead: prune first, at no cost to the budget's choice, the kept weights whose
            input is zero on every kept example (a dead unit's outgoing weights, an
            always-blank pixel's): one more forward an event; off by default, measured
            not to help (docs/results.md).
        **search_options: for the :class:`~bingo.TicketSearch` (``calibration``, the kept
            examples an event measures on; ``seed``, ``include``/``exclude``,
            ``loss_fn``, ...; ``proxy_every`` defaults to never after the first step when
            no candidate reads fisher or reset). Its random-subset variants substitute
            weights, which a masked model cannot take: ``variants`` must stay 0.
    """

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 start: float = 0.1, end: float = 0.75, every: int = 50,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES, free_dead: bool = False,
                 **search_options: Any):
        schedule = CubicSchedule(sparsity, total_steps, start, end, every)  # checks first
        known = PROXY_ESTIMATORS + MIXTURES
        unknown = [c for c in candidates if c not in known]
        if unknown or not candidates:
            raise ValueError(f"unknown candidates {unknown or list(candidates)}; choose from "
                             f"{', '.join(known)}")
        if search_options.get("variants", 0):
            raise ValueError("GradualTicketPruning keeps the searched model masked through "
                             "torch.nn.utils.prune, and the random-subset variants substitute "
                             "weights: leave variants at 0 (the events measure candidate masks "
                             "themselves)")
        if search_options.get("calibration", 1) == 0:
            raise ValueError("the events measure candidate masks on the search's kept "
                             "examples, and calibration=0 keeps none: give calibration=N")
        if not search_options.get("movement", True) and any("movement" in c for c in candidates):
            raise ValueError("a movement candidate needs the movement proxy: drop "
                             "movement=False or the movement candidates")
        if "proxy_every" not in search_options and not any(
                k in c for c in candidates for k in ("fisher", "reset")):
            # no candidate reads fisher or reset: fold them in on the first step only
            # (movement, every step, is a pass of its own); the same scores, ~1/3 less
            # proxy traffic
            search_options["proxy_every"] = total_steps + 1
        self.search = TicketSearch(model, variants=0, **search_options)
        self.search._masked_ok = True  # reads weight_orig; its estimators refuse
        super().__init__(model, [t.name for t in self.search.targets], schedule)
        self.candidates = tuple(candidates)
        self.free_dead = free_dead
        self.chosen: Dict[str, int] = {c: 0 for c in self.candidates}
        self._last: Dict[str, float] = {}

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> Optional[float]:
        """The search step on this batch, then the schedule (see ScheduledPruning.step)."""
        self.search.step(inputs, targets)
        return super().step(inputs, targets)

    __call__ = step

    # ------------------------------------------------------------------ an event
    def choose(self, sparsity: float) -> Masks:
        keep = self.keep()
        names = list(keep)
        flat_keep = torch.cat([keep[n].reshape(-1) for n in names])
        kept = flat_keep.nonzero().squeeze(1)
        goal = round(sparsity * flat_keep.numel())
        more = goal - (flat_keep.numel() - kept.numel())
        if more <= 0:
            self._last = {"chosen": "none"}
            return keep
        inputs, labels = self.search.calibration_batch()
        sizes = [keep[n].numel() for n in names]
        losses, proposals = {}, {}
        free = self._dead_inputs(names, inputs)[kept] if self.free_dead else None
        for c, ranking in self._rankings(names, kept).items():
            if free is not None:  # weights no kept example reaches go first, for free
                ranking = ranking.float().masked_fill(free, float("-inf"))
            flat = flat_keep.clone()
            flat[kept[lowest(ranking, more)]] = False
            proposals[c] = {n: p.view(keep[n].shape)
                            for n, p in zip(names, torch.split(flat, sizes))}
            losses[c] = self._loss(proposals[c], inputs, labels)
        best = min(self.candidates, key=lambda c: (losses[c], self.candidates.index(c)))
        self.search.ranks.agree(f"the masks chosen at step {self.step_count - 1}",
                                list(proposals[best].values()),
                                "every rank must train the same weights: wrap the model in "
                                "DistributedDataParallel and give each rank the same seed")
        self.chosen[best] += 1
        self._last = {"chosen": best, **({"free": int(free.sum())} if free is not None else {}),
                      **{f"loss {c}": v for c, v in losses.items()}}
        return proposals[best]

    def note(self) -> Dict[str, Any]:
        return self._last

    def _rankings(self, names: Sequence[str], kept: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each candidate's scores of the kept weights (flat, in ``names`` order); the
        mixtures average ranks among the kept weights."""
        weights = self.weights()
        index = {t.name: i for i, t in enumerate(self.search.targets)}
        proxies = self.search.proxies

        def flat(values) -> torch.Tensor:
            return torch.cat([values(n).reshape(-1).float() for n in names])[kept]

        needed = {c.split("+", 1)[-1] for c in self.candidates} | {"magnitude"}
        single = {"magnitude": flat(lambda n: weights[n].abs())}
        if "fisher" in needed:
            single["fisher"] = flat(lambda n: 0.5 * proxies.mean_fisher(index[n]).float()
                                    * weights[n].float() ** 2)
        for k in ("reset", "movement"):
            if k in needed:
                single[k] = flat(lambda n, k=k: proxies.sums[index[n]][k])
        out = {c: single[c] for c in self.candidates if c in single}
        mixed = [c for c in self.candidates if c in MIXTURES]
        if mixed:
            mag = stable_ranks(single["magnitude"])
            out.update({c: mag + stable_ranks(single[c.split("+", 1)[1]]) for c in mixed})
        return out

    def _dead_inputs(self, names: Sequence[str], inputs: torch.Tensor) -> torch.Tensor:
        """A flat mask (``names`` order) of the weights whose input (a Linear's feature, a
        Conv2d's channel) is zero on every kept example of every rank under the current
        masks: removing them changes no kept example's output."""
        alive: Dict[str, torch.Tensor] = {}

        def hook(name, module):
            def capture(_, args):
                x = args[0] != 0
                if isinstance(module, nn.Conv2d) and module.groups == 1:
                    alive[name] = x.transpose(0, 1).reshape(x.shape[1], -1).any(1)
                elif isinstance(module, nn.Linear):
                    alive[name] = x.reshape(-1, x.shape[-1]).any(0)
            return capture

        handles = [m.register_forward_pre_hook(hook(n, m))
                   for n, (m, _) in self._modules.items()]
        try:
            with Borrowed(self.model, [inputs.device]), torch.no_grad():
                self.model(inputs)
        finally:
            for h in handles:
                h.remove()
        if alive:  # alive on any rank's kept examples (a mean above 0): one all-reduce
            alive = self.search.ranks.mean_tensors({n: a.float() for n, a in alive.items()}, 1)
        dead = []
        for n in names:
            w = self._modules[n][0]
            shape = getattr(w, self._modules[n][1] + "_mask").shape
            if n not in alive:
                dead.append(torch.zeros(shape, dtype=torch.bool, device=inputs.device).reshape(-1))
                continue
            cols = (alive[n] == 0).view(1, -1, *([1] * (len(shape) - 2)))
            dead.append(cols.expand(shape).reshape(-1))
        return torch.cat(dead)

    def _loss(self, keep: Masks, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        """The loss on the kept examples with ``keep`` as the masks; nothing written."""
        masks = {f"{name}_mask": k.to(getattr(m, a + "_mask").dtype)
                 for name, k in keep.items() for m, a in [self._modules[name]]}
        with Borrowed(self.model, [inputs.device]), torch.no_grad():
            out = functional_call(self.model, masks, (inputs,))
            value = float(self.search.loss_fn(out, labels))
        value = self.search.ranks.mean(value, len(labels))  # every rank's kept examples
        return value if value == value else float("inf")

    def summary(self) -> Dict[str, Any]:
        """How often each candidate won an event, and the events' time."""
        return {"chosen": dict(self.chosen), "events": len(self.events),
                "event_seconds": self.event_seconds,
                "search_seconds": self.search.search_seconds}

