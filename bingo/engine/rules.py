"""Significance rules: how one search's measured change updates per-element scores.

A *search* is one variant: a subset of elements reset, and the metric before
(A_before) and after (A_after). Each rule keeps a small per-element state and
turns it into a score. Every rule except "paper-literal" ranks HIGHER = MORE
important, so pruning removes the lowest scores first.

Two numbers describe a search (see ``SearchChange``):

* ``relative`` = |A_before - A_after| / |A_before| (|A_before| = 0 counts as 1),
  the paper's relative change;
* ``damage``   = how much the reset hurt, signed: A_after - A_before for a loss,
  A_before - A_after for an accuracy. A reset that helps has negative damage.

Updates are applied one search at a time in variant order; a backend that
fuses K searches into one pass must apply them in that same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

State = Dict[str, torch.Tensor]


@dataclass(frozen=True)
class SearchChange:
    """What one search measured, reduced to the two numbers the rules use."""

    relative: float
    damage: float

    @staticmethod
    def from_metrics(before: float, after: float, higher_is_better: bool) -> "SearchChange":
        denom = abs(before) if before != 0 else 1.0
        damage = (before - after) if higher_is_better else (after - before)
        return SearchChange(relative=abs(before - after) / denom, damage=damage)


@dataclass
class Totals:
    """Sums over every search so far (all elements share them); used by "contrast"."""

    searches: int = 0
    damage_sum: float = 0.0

    def add(self, change: SearchChange) -> None:
        self.searches += 1
        self.damage_sum += change.damage


class Rule:
    """Base class: a named update of per-element state by one search."""

    name: str = ""
    ranks_higher_as_important: bool = True

    def init_state(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> State:
        raise NotImplementedError

    def update(self, state: State, mask: torch.Tensor, change: SearchChange) -> None:
        """Apply one search to the elements where ``mask`` is True, in place."""
        raise NotImplementedError

    def score(self, state: State, totals: Totals) -> torch.Tensor:
        raise NotImplementedError


class PaperRule(Rule):
    """S <- (S + relative) / 2 for each reset element, starting at 0.5.

    The paper's running halving, with its term oriented so a larger change means
    a more important weight. Recent searches dominate: the weight of a search
    halves with every later search of the same element.
    """

    name = "paper"

    def init_state(self, shape, dtype, device):
        return {"score": torch.full(shape, 0.5, dtype=dtype, device=device)}

    def term(self, change: SearchChange) -> float:
        return change.relative

    def update(self, state, mask, change):
        s = state["score"]
        torch.where(mask, (s + self.term(change)) * 0.5, s, out=s)

    def score(self, state, totals):
        return state["score"].clone()


class PaperLiteralRule(PaperRule):
    """S <- (S + 1 - relative) / 2, exactly as printed in the paper.

    Kept only to measure it: a reset that changes the metric a lot LOWERS the
    score, so ranked lowest-first this prunes the most important weights first.
    """

    name = "paper-literal"
    ranks_higher_as_important = False

    def term(self, change):
        return 1.0 - change.relative


class MeanRule(Rule):
    """Mean damage over the searches that reset the element.

    An element never reset scores the mean damage of all searches (no evidence
    either way).
    """

    name = "mean"

    def init_state(self, shape, dtype, device):
        return {
            "damage_sum": torch.zeros(shape, dtype=dtype, device=device),
            "count": torch.zeros(shape, dtype=dtype, device=device),
        }

    def update(self, state, mask, change):
        m = mask.to(state["count"].dtype)
        state["damage_sum"].add_(m, alpha=change.damage)
        state["count"].add_(m)

    def _mean_reset(self, state, totals):
        overall = totals.damage_sum / totals.searches if totals.searches else 0.0
        count = state["count"]
        mean = state["damage_sum"] / count.clamp(min=1)
        return torch.where(count > 0, mean, torch.full_like(mean, overall))

    def score(self, state, totals):
        return self._mean_reset(state, totals)


class ContrastRule(MeanRule):
    """Mean damage when reset minus mean damage when not reset.

    Subtracting the searches that left the element alone removes the part of
    the damage caused by everything else in the subsets. An element with no
    search on one side scores 0.
    """

    name = "contrast"

    def score(self, state, totals):
        count = state["count"]
        rest = totals.searches - count
        reset_mean = state["damage_sum"] / count.clamp(min=1)
        rest_mean = (totals.damage_sum - state["damage_sum"]) / rest.clamp(min=1)
        both = (count > 0) & (rest > 0)
        return torch.where(both, reset_mean - rest_mean, torch.zeros_like(reset_mean))


RULES: Dict[str, Rule] = {r.name: r for r in (PaperRule(), PaperLiteralRule(), MeanRule(), ContrastRule())}


def get_rule(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; choose one of {sorted(RULES)}") from None
