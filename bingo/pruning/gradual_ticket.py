"""BINGO during the one training run: ``GradualTicketPruning`` runs a TicketSearch after
each training step and prunes on Zhu & Gupta's cubic schedule, letting what the search
measured decide each event.

At an event to sparsity s every candidate ranking (the gradient proxies the search folds
in and their mixtures with magnitude, :mod:`bingo.evidence.candidates`) proposes the mask that
prunes the lowest-ranked kept weights to s over all layers at once, so each ranking also
proposes its own layer budgets; each proposal is measured exactly on the search's kept
training examples (the model borrowed: eval mode, RNG saved, the candidate mask
substituted for the ``weight_mask`` buffers in a functional call). The first candidate
(magnitude by default) is the reference: another replaces its mask only where its
per-example losses are lower than the reference's by ``margin`` standard errors of the
paired difference, and the lowest mean loss among those wins; so an event picks gradual
magnitude pruning's own mask unless something measured better by more than the kept
examples' noise.
"""
from __future__ import annotations

import bisect
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call

from ..engine.borrow import Borrowed
from ..engine.losses import per_example
from ..engine.proxies import PROXIES
from ..evidence.candidates import (
    LAYER_ADAPTIVE,
    MIXTURES,
    PROXY_ESTIMATORS,
    lamp_scores,
    lowest,
    ranks_of,
    square_order_from,
    stable_order,
    stable_ranks,
)
from ..evidence.ticket_search import TicketSearch
from .schedule import CubicSchedule, Masks, ScheduledPruning

# Measured (docs/results.md, *Pruning during the training run*): with fisher or mag+fisher
# among them the events pick those (the lowest loss right after the event) and the run
# ends 0.1-0.5 points lower under SGD; mag+movement wins events only under Adam. With lamp
# (since 2026-12-07) the conv net at 98-99% gains 0.1-9 points over gradual magnitude
# pruning (*How much a mask can give*), the MLPs within 0.1.
DEFAULT_CANDIDATES = ("magnitude", "mag+movement", "lamp")
# every ranking an event may be given (the CLI's --event-candidates checks against it)
KNOWN_CANDIDATES = PROXY_ESTIMATORS + MIXTURES + LAYER_ADAPTIVE
# Measured (docs/results.md, *A margin over the noise*): with 2 standard errors the 16 MLP
# cells stay within 0.07 of gradual magnitude pruning (0.20 behind at 0 margin), the gains
# at 99% kept.
DEFAULT_MARGIN = 2.0
# Measured (docs/results.md, *Fewer kept examples*): with the margin, 512 kept examples gave
# the 24 image cells the same mean as 2,048 (+0.18 over gradual magnitude pruning) at half
# the events' time; more stay an option (calibration=N).
DEFAULT_EVENT_EXAMPLES = 512


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
            magnitude, its mixture with movement, and LAMP; any of magnitude, fisher, reset,
            movement, their ``mag+`` mixtures and ``lamp``, magnitude scaled per layer by
            LAMP, may be named); ``("magnitude",)`` is
            gradual magnitude pruning with the search's overhead.
        margin: a candidate other than the first replaces the first's mask only if its
            per-example losses on the kept examples are lower by ``margin`` standard errors
            of the paired difference (0: the lowest mean loss, however small its lead).
        free_dead: prune first, at no cost to the budget's choice, the kept weights whose
            input is zero on every kept example (a dead unit's outgoing weights, an
            always-blank pixel's): one more forward an event; off by default, measured
            not to help (docs/results.md).
        optimizer: its state of the weights each event prunes is zeroed (see
            ScheduledPruning; or ``track(optimizer)`` once it exists).
        **search_options: for the :class:`~bingo.TicketSearch` (``calibration``, the kept
            examples an event measures on, 512 by default; ``seed``, ``include``/``exclude``,
            ``loss_fn``, ...; ``proxy_every`` defaults to never after the first step when
            no candidate reads fisher or reset, ``movement`` to False when none reads
            movement). Its random-subset variants substitute
            weights, which a masked model cannot take: ``variants`` must stay 0.
    """

    def __init__(self, model: nn.Module, *, sparsity: float, total_steps: int,
                 start: float = 0.1, end: float = 0.75, every: int = 50,
                 candidates: Sequence[str] = DEFAULT_CANDIDATES,
                 margin: float = DEFAULT_MARGIN, free_dead: bool = False,
                 optimizer: Optional[torch.optim.Optimizer] = None,
                 **search_options: Any):
        schedule = CubicSchedule(sparsity, total_steps, start, end, every)  # checks first
        known = KNOWN_CANDIDATES
        unknown = [c for c in candidates if c not in known]
        if unknown or not candidates:
            raise ValueError(f"unknown candidates {unknown or list(candidates)}; choose from "
                             f"{', '.join(known)}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not 0 <= margin < float("inf"):
            raise ValueError(f"margin is a number of standard errors >= 0 (default "
                             f"{DEFAULT_MARGIN}; 0 takes the lowest mean loss), got {margin!r}")
        if search_options.get("variants", 0):
            raise ValueError("GradualTicketPruning keeps the searched model masked through "
                             "torch.nn.utils.prune, and the random-subset variants substitute "
                             "weights: leave variants at 0 (the events measure candidate masks "
                             "themselves)")
        search_options.setdefault("calibration", DEFAULT_EVENT_EXAMPLES)
        if search_options["calibration"] == 0:
            raise ValueError("the events measure candidate masks on the search's kept "
                             "examples, and calibration=0 keeps none: give calibration=N")
        read = {k for c in candidates for k in PROXIES if k in c}  # the proxies ranked by
        if not search_options.get("movement", True) and "movement" in read:
            raise ValueError("a movement candidate needs the movement proxy: drop "
                             "movement=False or the movement candidates")
        if "proxy_every" not in search_options and not read & {"fisher", "reset"}:
            # no candidate reads fisher or reset: fold them in on the first step only
            # (movement, every step, is a pass of its own); the same scores, ~1/3 less
            # proxy traffic
            search_options["proxy_every"] = total_steps + 1
        if "movement" not in search_options and "movement" not in read:
            # nor movement: the search steps then only keep the batches (the same masks)
            search_options["movement"] = False
        self.search = TicketSearch(model, variants=0, **search_options)
        self.search._masked_ok = True  # reads weight_orig; its estimators refuse
        super().__init__(model, [t.name for t in self.search.targets], schedule, optimizer)
        self.candidates = tuple(candidates)
        self.free_dead, self.margin = free_dead, float(margin)
        self.chosen: Dict[str, int] = {c: 0 for c in self.candidates}
        self.vetoed = 0  # events where a lower mean loss fell within the margin
        self._last: Dict[str, float] = {}
        # which batches the search copies (_read_at_next_event)
        self._event_steps = schedule.events()
        self._capacity = self.search.ranks.portion(self.search.calibration)  # this rank's
        self._smallest, self._fresh = float("inf"), 0  # examples copied since the last skip
        self._skipping, self._gap = True, False

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, *,
             global_batch: bool = False) -> Optional[float]:
        """The search step on this batch, then the schedule (see ScheduledPruning.step).
        After the last event nothing reads the search, so it no longer steps (a quarter of
        a default run's search time; the same masks). ``global_batch``: see
        ``TicketSearch.step``."""
        if self.step_count <= self.schedule.last:
            local = len(inputs) // self.search.ranks.world if global_batch else len(inputs)
            self.search.step(inputs, targets, global_batch=global_batch,
                             keep=self._read_at_next_event(local))
        return super().step(inputs, targets)

    def _read_at_next_event(self, batch: int) -> bool:
        """Whether this step's batch can be among the kept examples the next event measures
        on (else the search does not copy it). The event at step e reads the last
        ``calibration`` examples of steps <= e; the batches of the ceil(calibration / b) + 1
        steps up to e hold them when at most one of them is smaller than b, the smallest
        batch seen so far (an epoch's last). Every batch is kept until one is held, so a run
        that stops early still has examples for ``finish()``; where a window fell short
        (batch sizes that shrink more often) the event notes ``"short"`` and every batch is
        kept from then on. The same masks as copying every batch (tested)."""
        self._smallest = min(self._smallest, max(batch, 1))
        t = self.step_count
        i = bisect.bisect_left(self._event_steps, t)
        held = self._gap or self._fresh > 0
        if not self._skipping or i == len(self._event_steps) or not held:
            keep = True
        else:
            window = -(-self._capacity // self._smallest) + 1
            keep = self._event_steps[i] - t < window
        self._fresh = self._fresh + batch if keep else 0
        self._gap |= not keep
        return keep

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
        short = self._gap and self._fresh < self._capacity
        self._skipping &= not short  # some kept examples are older than the window's
        sizes = [keep[n].numel() for n in names]
        losses, each, proposals = {}, {}, {}
        paired = self.margin > 0 and len(self.candidates) > 1
        free = self._dead_inputs(names, inputs)[kept] if self.free_dead else None
        rankings, orders = self._rankings(keep, kept)
        for c, ranking in rankings.items():
            if free is not None:  # weights no kept example reaches go first, for free
                cut = lowest(ranking.float().masked_fill(free, float("-inf")), more)
            elif c in orders:  # its stable order's first: the same as lowest(), no kthvalue
                cut = orders[c][:more]
            else:
                cut = lowest(ranking, more)
            flat = flat_keep.clone()
            flat[kept[cut]] = False
            proposals[c] = {n: p.view(keep[n].shape)
                            for n, p in zip(names, torch.split(flat, sizes))}
            losses[c], each[c] = self._loss(proposals[c], inputs, labels, paired)
        reference = self.candidates[0]
        lower = [c for c in self.candidates if losses[c] < losses[reference]]
        passing = [c for c in lower if not paired or losses[reference] == float("inf")
                   or self._clearly_lower(each[c], each[reference])]
        best = min([reference] + passing,
                   key=lambda c: (losses[c], self.candidates.index(c)))
        vetoed = len(lower) > len(passing)
        self.vetoed += vetoed
        self.search.ranks.agree(f"the masks chosen at step {self.step_count - 1}",
                                list(proposals[best].values()),
                                "every rank must train the same weights: wrap the model in "
                                "DistributedDataParallel and give each rank the same seed")
        self.chosen[best] += 1
        self._last = {"chosen": best, **({"vetoed": True} if vetoed else {}),
                      **({"short": True} if short else {}),
                      **({"free": int(free.sum())} if free is not None else {}),
                      **{f"loss {c}": v for c, v in losses.items()}}
        return proposals[best]

    def note(self) -> Dict[str, Any]:
        return self._last

    def _rankings(self, keep: Masks, kept: torch.Tensor
                  ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Each candidate's scores of the kept weights (``kept``: their flat indices, in
        ``keep``'s order; the mixtures average ranks among the kept weights), and the
        stable orders sorted on the way (magnitude's, where LAMP or a mixture needs it:
        one sort gives magnitude's cut, the mixtures' magnitude ranks and LAMP's per-layer
        orders, the same as sorting each)."""
        names = list(keep)
        weights = self.weights()
        index = {t.name: i for i, t in enumerate(self.search.targets)}
        proxies = self.search.proxies

        def flat(values) -> torch.Tensor:
            return torch.cat([values(n).reshape(-1).float() for n in names])[kept]

        needed = {c.split("+", 1)[-1] for c in self.candidates} | {"magnitude"}
        single = {"magnitude": flat(lambda n: weights[n].abs())}
        mixed = [c for c in self.candidates if c in MIXTURES]
        orders = {"magnitude": stable_order(single["magnitude"])} \
            if mixed or "lamp" in needed else {}
        if "lamp" in needed:  # each layer's kept weights alone (the pruned, 0, add nothing
            # to LAMP's sums: the same scores, a sort of the kept rather than of all)
            counts = [int(keep[n].count_nonzero()) for n in names]
            kept_weights = torch.split(flat(lambda n: weights[n]), counts)
            layer_orders = square_order_from(single["magnitude"], orders["magnitude"], counts)
            if layer_orders is None:
                layer_orders = [None] * len(counts)
            single["lamp"] = torch.cat([lamp_scores(w, o).float()
                                        for w, o in zip(kept_weights, layer_orders)])
        if "fisher" in needed:
            single["fisher"] = flat(lambda n: 0.5 * proxies.mean_fisher(index[n]).float()
                                    * weights[n].float() ** 2)
        for k in ("reset", "movement"):
            if k in needed:
                single[k] = flat(lambda n, k=k: proxies.sums[index[n]][k])
        out = {c: single[c] for c in self.candidates if c in single}
        if mixed:
            mag = ranks_of(orders["magnitude"])
            out.update({c: mag + stable_ranks(single[c.split("+", 1)[1]]) for c in mixed})
        return out, orders

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

    def _loss(self, keep: Masks, inputs: torch.Tensor, labels: torch.Tensor,
              paired: bool = False) -> Tuple[float, Optional[torch.Tensor]]:
        """The loss on the kept examples with ``keep`` as the masks (and with ``paired``
        this rank's per-example losses); nothing written."""
        out = self.masked_forward(keep, inputs)
        with torch.no_grad():
            value = float(self.search.loss_fn(out, labels))
            each = self._per_example(out, labels) if paired else None
        value = self.search.ranks.mean(value, len(labels))  # every rank's kept examples
        return (value if value == value else float("inf")), each

    def masked_forward(self, keep: Masks, inputs: torch.Tensor) -> Any:
        """The model's output on ``inputs`` with ``keep`` substituted for the
        ``weight_mask`` buffers (a functional call on the borrowed model: eval mode, RNG
        saved, nothing written, no gradient)."""
        masks = {f"{name}_mask": k.to(getattr(m, a + "_mask").dtype)
                 for name, k in keep.items() for m, a in [self._modules[name]]}
        with Borrowed(self.model, [inputs.device]), torch.no_grad():
            return functional_call(self.model, masks, (inputs,))

    def _per_example(self, out: Any, labels: torch.Tensor) -> torch.Tensor:
        """Each kept example's loss (``engine.losses.per_example``), float64."""
        try:
            return per_example(self.search.loss_fn, out, labels)
        except Exception as error:
            raise ValueError(f"the events' margin compares per-example losses, and "
                             f"loss_fn could not be called on one kept example at a "
                             f"time ({error}); give margin=0 (the lowest mean loss "
                             f"wins) or a loss that takes a batch of one") from error

    def _clearly_lower(self, each: torch.Tensor, reference: torch.Tensor) -> bool:
        """Whether ``each`` is below ``reference`` by ``margin`` standard errors of the
        paired difference, over every rank's kept examples (one all-reduce); examples
        whose loss is not finite under either mask (a sequence with no labelled
        position) are left out."""
        d = each - reference
        d = d[torch.isfinite(d)]
        n = len(d)
        local = torch.stack([d.mean(), (d * d).mean()]) if n else d.new_zeros(2)
        moments = self.search.ranks.mean_tensors({"m": local}, n)["m"]
        total = self.search.ranks.total(n)
        if total < 2:
            return False
        mean = float(moments[0])
        variance = max(float(moments[1]) - mean * mean, 0.0) * total / (total - 1)
        return mean + self.margin * (variance / total) ** 0.5 < 0

    def summary(self) -> Dict[str, Any]:
        """How often each candidate won an event, and the events' time."""
        return {"chosen": dict(self.chosen), "vetoed": self.vetoed, "events": len(self.events),
                "calibration": self.search.calibration,
                "event_seconds": self.event_seconds,
                "search_seconds": self.search.search_seconds}

