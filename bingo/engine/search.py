"""The engine of BINGO's lottery-ticket search, run after each training step
(``SearchEngine``; the public ``bingo.TicketSearch`` adds the estimators on top).

After the optimizer step, ``step(inputs, targets)`` measures the metric of the
current model and of K variants, each with a random subset of the prunable
weights (or units) reset to their initial values (or to zero), and folds the
changes into a significance score per weight. The same call folds the step's
gradients into per-weight proxies (:mod:`bingo.engine.proxies`) and keeps the last few
batches for calibration; ``TicketSearch.significance``
(:mod:`bingo.evidence.ticket_search`) turns all of it into scores with a named estimator.
The user's model is borrowed, never changed: variants are evaluated by substituting tensors in a
functional call, in eval mode, without autograd, and mode and RNG state are
restored afterwards.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from . import search_state
from .borrow import Borrowed
from .calibration import CalibrationBuffer
from .dispatch import backend_name, select_backend
from .distributed import AUTO, Ranks, local_module
from .losses import cross_entropy
from .proxies import DEFAULT_PROXY_EVERY, Proxies
from .reference import SearchBatch, SearchPlan
from .regression import SubsetRegression, features
from .rule_state import RuleState
from .rules import SearchChange, Totals, get_rule
from .search_state import STATE_FORMAT, SearchRecord  # noqa: F401 (re-exported)
from .subsets import LEVELS, fraction_to_threshold
from .targets import select_targets, torch_pruned

METRICS = ("loss", "accuracy")
RESET_TARGETS = ("init", "zero")
DEFAULT_CALIBRATION = 2048  # training examples kept for the calibrated estimator


def _torch_pruned(model: nn.Module, name: str) -> bool:
    """``targets.torch_pruned`` for a parameter name of ``model`` (False if its module is
    gone)."""
    module_name, _, attr = name.rpartition(".")
    try:
        return torch_pruned(model.get_submodule(module_name), attr)
    except AttributeError:
        return False


class SearchEngine:
    """Lottery-ticket search over a model's prunable weights during training.

    Args:
        model: the network being trained; its current weights are snapshotted
            now as the "initial" values that variants reset to.
        fraction: share of prunable weights (or units) each variant resets, in
            (0, 1); quantized to 1/256 (see ``effective_fraction``).
        variants: K, the number of reset subsets evaluated per step (0, the default: no
            random-subset search; the proxies and calibration batches are still kept,
            which is all the calibrated estimator needs; the paper's searches, read by
            the "search", "regression" and "units" estimators, need K >= 1).
        metric: "loss" (batch loss, continuous) or "accuracy" (batch accuracy,
            what the paper used; moves in steps of 1/batch).
        granularity: "weight" resets single weights; "neuron" resets whole
            output units (a row of the weight and its bias entry).
        rule: significance rule, see :mod:`bingo.engine.rules` ("paper", "paper-literal",
            "mean", "contrast").
        seed: keys the subset stream; the same seed regenerates the same subsets.
        include / exclude: parameter names or shell patterns choosing what to
            prune (default: weights of Linear and Conv layers).
        loss_fn: ``loss_fn(outputs, targets)`` for the loss metric (default
            cross-entropy).
        reset_to: what a variant resets its subset to: "init" (the initial
            values, as in the paper) or "zero" (what pruning does).
        proxy_decay: the Fisher proxy's decay per step (1: a plain sum).
        proxy_every: fold the gradients into the fisher and reset proxies every this many
            steps (default 3; movement, a signed sum that needs consecutive steps, is
            folded in every step): on a 2-core CPU the full update costs 9-13% of an MLP's
            training step, movement alone half of that (bench/README.md, docs/results.md).
        movement: collect the movement proxy (default True). False skips its pass on
            every step (on CPU the proxies then cost ~40% as much); the "movement" and
            "mag+movement" estimators refuse, and "calibrated" chooses among the others.
        calibration: how many of the most recent training examples to keep for the
            calibrated estimator (0 keeps none).
        regression_every: every this many steps, add the step's variants to the
            per-layer regression of damage on feature sums (:mod:`bingo.engine.regression`,
            the ``regression`` estimator; needs variants >= 2 at weight granularity).
            0 (the default) skips it: every step doubles a K = 8 search step on CPU.
        group: the ``torch.distributed`` processes the search spans (:mod:`bingo.engine.
            distributed`): "auto" (the default: every process, once torch.distributed is
            initialized), a ProcessGroup, or None (this process alone). Spanning W ranks,
            each rank keeps ``calibration / W`` of the kept examples, a measured loss is
            their mean over every rank, and a step's K metrics are exchanged. Pass the
            DistributedDataParallel model or its ``.module``; build the search on every
            rank with the same arguments.
        rank_split: how a step spanning ranks divides its variants' work: "examples"
            (each rank all K on its own slice of the batch, the metrics averaged; the
            faster on the 2-core CPU for the conv net) or "variants" (rank r evaluating
            variants r, r + W, ... on the whole batch: gathered, or passed by every rank,
            ``step(..., global_batch=True)``); both give one process's numbers.
    """

    def __init__(self, model: nn.Module, *, fraction: float = 0.05, variants: int = 0,
                 metric: str = "loss", granularity: str = "weight", rule: str = "paper",
                 seed: int = 0, include: Optional[Sequence[str] | str] = None,
                 exclude: Optional[Sequence[str] | str] = None,
                 loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                 reset_to: str = "init", proxy_decay: float = 1.0,
                 proxy_every: int = DEFAULT_PROXY_EVERY, movement: bool = True,
                 calibration: int = DEFAULT_CALIBRATION, regression_every: int = 0,
                 group: Any = AUTO, rank_split: str = "examples"):
        if isinstance(variants, bool) or not isinstance(variants, int) or variants < 0:
            raise ValueError(f"variants must be an integer >= 0 (subsets evaluated per step; "
                             f"0 keeps only the gradient proxies and calibration batches), "
                             f"got {variants!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed must be an integer in [0, 2**64) (it keys the subset "
                             f"stream), got {seed!r}")
        if reset_to not in RESET_TARGETS:
            raise ValueError(f"reset_to must be one of {RESET_TARGETS}, got {reset_to!r}")
        if isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 0:
            raise ValueError(f"calibration must be an integer >= 0 (examples kept), "
                             f"got {calibration!r}")
        if isinstance(proxy_every, bool) or not isinstance(proxy_every, int) or proxy_every < 1:
            raise ValueError(f"proxy_every must be an integer >= 1, got {proxy_every!r}")
        if not isinstance(movement, bool):
            raise ValueError(f"movement must be True or False (collect the movement proxy "
                             f"or not), got {movement!r}")
        if (isinstance(regression_every, bool) or not isinstance(regression_every, int)
                or regression_every < 0):
            raise ValueError(f"regression_every must be an integer >= 0 (0: no regression), "
                             f"got {regression_every!r}")
        model = local_module(model)
        self.ranks = Ranks(group, rank_split)
        self.model = model
        self.proxy_every = proxy_every
        self.regression_every = regression_every
        self.reset_to = reset_to
        self.calibration = calibration
        self.fraction = float(fraction)
        self.threshold = fraction_to_threshold(fraction)
        self.variants = variants
        self.metric = metric
        self.granularity = granularity
        self.rule = get_rule(rule)
        self.seed = seed
        self.loss_fn = loss_fn or cross_entropy
        self.targets = select_targets(model, granularity=granularity, include=include,
                                      exclude=exclude)
        pruned = [t.name for t in self.targets if _torch_pruned(model, t.name)]
        if pruned:
            raise ValueError(
                f"{', '.join(pruned)} {'is' if len(pruned) == 1 else 'are'} masked through "
                f"torch.nn.utils.prune (weight = weight_orig * weight_mask), which a "
                f"TicketSearch cannot search: build the search before pruning, or make the "
                f"pruning permanent first with torch.nn.utils.prune.remove(module, 'weight') "
                f"(the pruned weights are then zeros that training may change)")
        params = dict(model.named_parameters())
        self._initial: Dict[str, torch.Tensor] = {}
        for t in self.targets:
            self._initial[t.name] = params[t.name].detach().clone()
            if granularity == "neuron" and t.bias_name is not None:
                self._initial[t.bias_name] = params[t.bias_name].detach().clone()
        self._paths = {name: (tuple(name.split(".")[:-1]), name.split(".")[-1])
                       for name in self._initial}  # for _parameters()
        self.proxies = Proxies(self.targets, params, proxy_decay, movement=movement)
        self.regression = SubsetRegression(self.targets)  # fed at weight granularity, K >= 2
        self._zeros: Optional[Dict[str, torch.Tensor]] = None  # reset_values() for "zero"
        self._calibration = CalibrationBuffer(calibration, self.ranks)  # most recent
        self.rule_state = RuleState(self.rule, self.targets, params, self.ranks)
        self.totals = Totals()
        self.step_count = 0
        self.history: List[SearchRecord] = []  # the steps that ran searches (K >= 1)
        self.search_seconds = 0.0
        self.last_calibration = None  # what the calibrated estimator measured, once asked
        self._masked_ok = False  # GradualTicketPruning's: targets read as <attr>_orig
        self.ranks.agree_search(self.config(), calibration, list(self._initial.values()))

    # ------------------------------------------------------------------ info
    @property
    def effective_fraction(self) -> float:
        """The fraction the subset stream actually draws: round(fraction * 256) / 256."""
        return self.threshold / LEVELS

    @property
    def numel(self) -> int:
        """Elements in the search space: weights, or units at neuron granularity."""
        return sum(t.size for t in self.targets)

    def config(self) -> Dict[str, Any]:
        return {
            "fraction": self.fraction, "effective_fraction": self.effective_fraction,
            "variants": self.variants, "metric": self.metric,
            "granularity": self.granularity, "rule": self.rule.name, "seed": self.seed,
            "targets": [t.name for t in self.targets], "reset_to": self.reset_to,
            "proxy_every": self.proxy_every, "movement": self.proxies.movement,
            "regression_every": self.regression_every,
        }

    def plan(self, step: int) -> SearchPlan:
        """The plan that fixes the subsets of search step ``step``."""
        return SearchPlan(self.seed, step, self.variants, self.threshold, self.granularity,
                          self.numel)

    def __repr__(self) -> str:
        return (f"TicketSearch({len(self.targets)} tensors, {self.numel} {self.granularity}s, "
                f"K={self.variants}, p={self.effective_fraction:.4f}, rule={self.rule.name}, "
                f"metric={self.metric}, reset_to={self.reset_to}, steps={self.step_count})")

    # ------------------------------------------------------------------ search
    def _parameters(self) -> Dict[str, nn.Parameter]:
        """The model's current tensors for the targets (and their biases at neuron
        granularity), looked up by name each step so that a replaced module is seen:
        through the modules' own dicts (~1 us a name; ``get_parameter`` took ~10 us),
        with ``get_parameter`` kept for what they cannot resolve and for its errors."""
        params = {}
        for name, (path, leaf) in self._paths.items():
            try:
                module = self.model
                for part in path:
                    module = module._modules[part]
                p = module._parameters[leaf]
                if p is None:
                    raise KeyError(leaf)
            except (KeyError, AttributeError, TypeError):
                p = self._get_parameter(name)
            params[name] = p
        return params

    def _get_parameter(self, name: str) -> nn.Parameter:
        try:
            return self.model.get_parameter(name)
        except AttributeError:
            if _torch_pruned(self.model, name) and self._masked_ok:
                path, leaf = self._paths[name]  # the masked weight's storage, from now on
                self._paths[name] = (path, leaf + "_orig")
                return self.model.get_parameter(name + "_orig")
            if _torch_pruned(self.model, name):
                raise RuntimeError(
                    f"{name!r} was masked through torch.nn.utils.prune (e.g. by bingo.prune) "
                    f"after this search was built, so it is no longer a parameter the search "
                    f"can read: ask for every score you need before pruning "
                    f"(search.significance(sparsity=s) for each s) and prune a copy of the "
                    f"model (copy.deepcopy); a new TicketSearch needs the pruning made "
                    f"permanent first (torch.nn.utils.prune.remove)") from None
            raise RuntimeError(f"parameter {name!r} is gone from the model; build a new "
                               f"TicketSearch after changing the model's structure") from None

    def _current(self, params: Mapping[str, nn.Parameter]) -> Dict[str, torch.Tensor]:
        current = {}
        for name, init in self._initial.items():
            p = params[name].detach()
            if p.shape != init.shape:
                raise RuntimeError(f"parameter {name!r} changed shape from {tuple(init.shape)} "
                                   f"to {tuple(p.shape)}; build a new TicketSearch")
            if init.device != p.device or init.dtype is not p.dtype:
                self._initial[name] = init.to(device=p.device, dtype=p.dtype)
            current[name] = p
        return current

    def reset_values(self) -> Dict[str, torch.Tensor]:
        """What a variant substitutes for a reset element: the initial values, or zeros."""
        if self.reset_to == "init":
            return self._initial
        zeros = self._zeros
        if zeros is None or any(zeros[k].device != v.device or zeros[k].dtype != v.dtype
                                for k, v in self._initial.items()):
            zeros = self._zeros = {k: torch.zeros_like(v) for k, v in self._initial.items()}
        return zeros

    def calibration_batch(self) -> tuple:
        """The kept examples (the most recent ``calibration``) as one (inputs, labels) batch;
        spanning W ranks, this rank's share (its most recent ``calibration / W``)."""
        if not len(self._calibration):
            raise ValueError("no calibration examples: run step() during training (with "
                             "calibration > 0) before asking for the calibrated estimator")
        return self._calibration.batch()

    def kept_examples(self) -> tuple:
        """Every rank's kept examples gathered (``calibration_batch()`` in one process): what
        a refit or a BatchNorm re-estimate reads, so that it comes out alike on every rank."""
        self.calibration_batch()  # its error if there are none
        return self._calibration.everywhere()

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, *,
             global_batch: bool = False, keep: bool = True) -> SearchRecord:
        """Run one search on this batch (call it after ``optimizer.step()``).

        Spanning ranks, pass each rank its own slice of the global batch, or, where every
        rank has the whole global batch (the same on every rank), that batch with
        ``global_batch=True``: nothing of it is gathered then (``rank_split="variants"``
        measures this rank's variants on all of it), each rank keeps its slice as kept
        examples, and the ranks check in their exchange that their batches agree.
        ``keep=False``: the batch does not join the kept examples (a caller that knows no
        measurement reads it before newer batches replace it saves the copy)."""
        start = time.perf_counter()
        whole = global_batch and self.ranks.active
        kept = self.ranks.slice(inputs, targets) if whole else (inputs, targets)
        mark = self.ranks.fingerprint(inputs, targets) if whole and self.variants else None
        full = self.step_count % self.proxy_every == 0  # fisher and reset this step
        before, after, changes = float("nan"), [], []
        if not (self.variants or full or self.proxies.movement):  # nothing to read now
            return self._close_step(*kept, before, after, start, keep)
        params = self._parameters()
        current = self._current(params)
        backend = select_backend(current[self.targets[0].name].device)
        reset = self.reset_values()  # after _current: it may move the initial values
        if self.variants:
            plan = self.plan(self.step_count)
            devices = [p.device for p in current.values()]
            ranks = self.ranks  # spanning ranks: what this rank measures, then exchanged
            x, y, owned = ranks.search_batch(inputs, targets, self.variants, whole)
            with Borrowed(self.model, devices), torch.no_grad():
                batch = SearchBatch(self.model, x, y, self.metric, self.loss_fn, owned)
                before, after = backend.evaluate_variants(plan, self.targets, current,
                                                          reset, batch)
            before, after = ranks.search_metrics(before, after, self.variants, len(y), mark)
            self._check_finite(before, after)
            higher_is_better = self.metric == "accuracy"
            changes = [SearchChange.from_metrics(before, a, higher_is_better) for a in after]
            with torch.no_grad():
                self.rule_state.accumulate(backend, plan, changes)
            for c in changes:
                self.totals.add(c)
        with torch.no_grad():  # fisher and reset every proxy_every steps, movement always
            self.proxies.update(backend, params, reset, full=full)
        if (self.regression_every and self.step_count % self.regression_every == 0
                and len(changes) >= 2 and self.granularity == "weight"):
            with torch.no_grad():
                feats = [features(self.proxies, i, current[t.name], reset[t.name],
                                  params[t.name].grad) for i, t in enumerate(self.targets)]
                self.regression.observe(backend, plan, self.targets, feats, changes)
        return self._close_step(*kept, before, after, start, keep)

    def _close_step(self, inputs: torch.Tensor, targets: torch.Tensor, before: float,
                    after: Sequence[float], start: float, keep: bool = True) -> SearchRecord:
        """Keep the batch for calibration, record the step (in ``history`` only if it ran
        searches: a K = 0 step measures nothing, and a long run would pile up a record a
        step), count it and its time."""
        if keep:
            self._calibration.add(inputs, targets)
        record = SearchRecord(self.step_count, before, list(after))
        if self.variants:
            self.history.append(record)
        self.step_count += 1
        self.search_seconds += time.perf_counter() - start
        return record

    def _check_finite(self, before: float, after: Sequence[float]) -> None:
        if not math.isfinite(before):
            raise FloatingPointError(
                f"the model's {self.metric} on this batch is {before}: a search needs a finite "
                f"baseline. Check the learning rate, the inputs and the loss function, or skip "
                f"the search on batches where training diverged")
        bad = [k for k, a in enumerate(after) if not math.isfinite(a)]
        if bad:
            raise FloatingPointError(
                f"variants {bad} of step {self.step_count} give a non-finite {self.metric} "
                f"({after[bad[0]]}) when their subsets are reset to initial values; check the "
                f"initial weights for inf/nan or use metric='accuracy'")

    # ------------------------------------------------------------------ results
    def unit_significance(self) -> Dict[str, torch.Tensor]:
        """Per-unit scores at neuron granularity: {weight name: [units] tensor}."""
        if self.granularity != "neuron":
            raise ValueError("unit_significance() needs granularity='neuron'; "
                             "use significance() for per-weight scores")
        return {t.name: self.rule.score(s, self.totals)
                for t, s in zip(self.targets, self.rule_state.whole())}

    def rule_significance(self) -> Dict[str, torch.Tensor]:
        """The rule's scores from the random-subset searches alone, shaped like the
        parameters (the paper's significance; at neuron granularity every weight of a
        unit carries the unit's score). Higher = more important except for "paper-literal"."""
        out = {}
        for t, s in zip(self.targets, self.rule_state.whole()):
            score = self.rule.score(s, self.totals)
            score = score.view(t.shape) if self.granularity == "weight" else t.expand_units(score)
            like = self._initial[t.name]  # same dtype and device as the parameter
            out[t.name] = score.to(device=like.device, dtype=like.dtype).contiguous()
        return out

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume bit-identically: config, step, initial values, scores."""
        return search_state.save(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the configuration must match this search's."""
        search_state.load(self, state)

    @property
    def backend(self) -> str:
        return backend_name(select_backend(self._initial[self.targets[0].name].device))
