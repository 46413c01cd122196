"""Estimators: how a TicketSearch's evidence becomes one score per weight.

Evidence a search collects in one training run (nothing else is ever trained):

* the random-subset searches, folded by the rule (:mod:`bingo.engine.rules`);
* the gradient proxies (:mod:`bingo.engine.proxies`): fisher, reset, movement;
* the most recent training batches (``search.calibration_batch()``), on which the
  network with any candidate mask can be measured exactly, as the searches do.

Named estimators (higher = more important for all of them):

=============== ===========================================================================
``search``      the rule's scores alone (the paper's significance when rule="paper")
``regression``  per layer, the coefficients that best predict each search's damage from
                its subset's sums of the features obd, reset and distance
                (:mod:`bingo.engine.regression`), applied to each weight: its predicted damage
``magnitude``   |w|
``fisher``      ½ F̄ w²: OBD's estimate of the loss increase when w is pruned to zero
``reset``       Σ |g (r - w)|: the first-order size of the search's reset, summed over steps
``movement``    -Σ g w: pushed away from zero by training (Sanh et al.)
``mag+<proxy>`` the average of the global ranks of |w| and of fisher/reset/movement
``activation``  |w| times the rms of its input on the kept examples, over the layer's mean
                (Wanda's score; :mod:`bingo.evidence.activations`)
``units``       needs granularity="neuron": the lowest-scoring units of each hidden layer
                removed whole (a share measured on the calibration batches), the other
                weights ranked by magnitude
``budgeted``    every proxy, mixture and activation above, each with its layer budgets
                moved until the measured calibration loss stops falling; the one with the
                lowest loss kept
``calibrated``  the default: ``budgeted``, then a swap search on its mask: at the pruned
                network, the gradient on the calibration batches and the Fisher proxy
                estimate what removing each kept weight and restoring each pruned one
                would cost; the k cheapest of each are swapped, the swap is measured
                exactly and kept only if the loss falls (k halves when it does not)
=============== ===========================================================================

``budgeted`` and ``calibrated`` optimize for the sparsity asked for; their scores prune
exactly that mask there, and degrade gracefully at other sparsities (lowest first).

The searches measure what a candidate mask really costs; what they cannot do is resolve
a quarter of a million separate numbers, so they decide the few things that matter
most: which proxy to trust, and how much each layer can lose.

Where they live: the proxy rankings and mixtures in :mod:`bingo.evidence.candidates`, the exact
measurement of a mask in :mod:`bingo.evidence.meter`, the budget balancing, swap search and refit
choice in :mod:`bingo.evidence.calibrated`; this module names them and runs ``units``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional

import torch

from ..engine.regression import regression_scores
from .calibrated import calibrate, global_counts
from .candidates import (
    DATA_CANDIDATES,
    MIXTURES,
    PROXY_ESTIMATORS,
    Scores,
    available,
    candidate_scores,
    like_params,
    proxy_scores,
    weights_of,
)
from .meter import Meter, layer_ranks

if TYPE_CHECKING:
    from ..engine.search import SearchEngine

ESTIMATORS = ("calibrated", "budgeted", "search", "regression", *PROXY_ESTIMATORS, *MIXTURES,
              *DATA_CANDIDATES, "units")
DEFAULT_ESTIMATOR = "calibrated"
SEARCH_ESTIMATORS = ("search", "regression", "units")  # the ones that read the searches
MEASURING_ESTIMATORS = ("calibrated", "budgeted", "units")  # measure masks on kept examples
REFIT_AWARE = ("calibrated", "budgeted")  # refit=True: choose the mask best after a refit
DEFAULT_CALIBRATION_SPARSITY = 0.9
UNIT_SHARES = (0.0, 0.1, 0.2, 0.3, 0.5)  # shares of hidden units "units" tries removing


def estimate(search: "SearchEngine", name: str = DEFAULT_ESTIMATOR, *,
             sparsity: Optional[float] = None, refit: bool = False) -> Scores:
    """Scores of every target of ``search`` by the estimator ``name`` (see module doc).
    ``refit=True`` (calibrated, budgeted) chooses the mask that will be refit by
    ``bingo.refit``: the lowest calibration loss after a refit, among every candidate's
    global ranking and the estimator's own mask (``calibrated.refit_choice``)."""
    if search._masked_ok:
        raise ValueError("this search belongs to a GradualTicketPruning, whose masks prune "
                         "the model as it trains: its estimators would measure the "
                         "unmasked weights. The pruner's events already chose the masks "
                         "(pruner.finish()); score an unpruned model with a TicketSearch "
                         "of its own")
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if refit and name not in REFIT_AWARE:
        raise ValueError(f"refit=True chooses among the calibrated estimator's candidate "
                         f"masks; the {name} estimator has one ranking: pass refit=False "
                         f"(then refit its mask with bingo.refit)")
    if sparsity is not None and not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in (0, 1) (the share of weights you "
                         f"will prune), got {sparsity}")
    if name == "search":
        return search.rule_significance()
    if name == "regression":
        return like_params(search, regression_scores(search.proxies, search.regression,
                                                      weights_of(search)))
    if name == "units":
        return _units(search, sparsity or DEFAULT_CALIBRATION_SPARSITY)
    if name in ("calibrated", "budgeted"):
        return calibrate(search, sparsity or DEFAULT_CALIBRATION_SPARSITY,
                         swaps=name == "calibrated", refit=refit)
    if name in DATA_CANDIDATES and name not in available(search):
        raise ValueError(f"the {name} estimator reads the kept examples, and this search "
                         f"kept none: build it with calibration > 0 and call step() during "
                         f"training")
    if name not in available(search):  # a movement estimator, movement not collected
        raise ValueError(f"the {name} estimator reads the movement proxy, which this search "
                         f"did not collect: build the TicketSearch with movement=True (the "
                         f"default; bingo: drop --no-movement)")
    return candidate_scores(search, [name])[name]


def _units(search: "SearchEngine", sparsity: float) -> Scores:
    """Whole low-scoring units removed (the share with the lowest measured loss), the
    other weights ranked by magnitude."""
    if search.granularity != "neuron":
        raise ValueError("the 'units' estimator ranks whole units by neuron searches: build the "
                         "TicketSearch with granularity='neuron' (reset_to='zero' and "
                         "rule='contrast' measure what removing a unit costs)")
    meter = Meter(search)
    magnitude = proxy_scores(search)["magnitude"]
    unit_scores = search.unit_significance()
    best, best_loss = None, float("inf")
    for share in UNIT_SHARES:
        alive = surviving_units(search, unit_scores, share)
        scores = {n: torch.where(alive[n], magnitude[n] + 1.0, magnitude[n] * 0.0)
                  for n in magnitude}  # weights of removed units rank below every survivor
        value = meter.loss(layer_ranks(scores), global_counts(scores, sparsity))
        if value < best_loss:
            best, best_loss = scores, value
    return like_params(search, best)


def surviving_units(search: "SearchEngine", unit_scores: Dict[str, torch.Tensor],
                    share: float) -> Dict[str, torch.Tensor]:
    """Bool masks of the weights' shape: False on the rows of the ``share`` lowest-scoring
    units of each target but the last (whose units are the network's outputs)."""
    out = {}
    for i, t in enumerate(search.targets):
        u = unit_scores[t.name].reshape(-1)
        alive = torch.ones(t.units, dtype=torch.bool, device=u.device)
        if i < len(search.targets) - 1:
            alive[torch.sort(u.float(), stable=True).indices[:int(share * t.units)]] = False
        out[t.name] = t.expand_units(alive)
    return out
