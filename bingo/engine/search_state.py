"""A TicketSearch's record of each step and its checkpoint: ``save`` and ``load``, behind
``TicketSearch.state_dict`` / ``load_state_dict``, resume a search bit-identically."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping

from .rules import Totals

# 4: movement folded in every step (fisher and reset every proxy_every-th). A format-3
# state means the same only with proxy_every = 1 (format 3 sampled movement too).
STATE_FORMAT = "bingo.TicketSearch/4"
_SAME_AT_EVERY_STEP = "bingo.TicketSearch/3"


@dataclass
class SearchRecord:
    """What one search step measured: the metric before and after each variant."""

    step: int
    before: float
    after: List[float] = field(default_factory=list)


def save(search: Any) -> Dict[str, Any]:
    """Everything needed to resume a SearchEngine bit-identically: config, step, initial values, scores."""
    return {
        "format": STATE_FORMAT,
        "config": search.config(),
        "step": search.step_count,
        "initial": {k: v.clone() for k, v in search._initial.items()},
        "state": [{k: v.clone() for k, v in s.items()} for s in search.rule_state.whole()],
        "totals": {"searches": search.totals.searches, "damage_sum": search.totals.damage_sum},
        "search_seconds": search.search_seconds,
        "history": [(r.step, r.before, list(r.after)) for r in search.history],
        "proxies": search.proxies.state_dict(),
        "regression": search.regression.state_dict(),
        "calibration": search._calibration.state_dict(),
    }


def load(search: Any, state: Mapping[str, Any]) -> None:
    """Resume ``search`` from :func:`save`; the configuration must match the search's."""
    fmt = state.get("format")
    if fmt == _SAME_AT_EVERY_STEP and state["config"].get("proxy_every") != 1:
        raise ValueError(f"this search state ({fmt!r}) summed the movement proxy only "
                         f"every proxy_every={state['config'].get('proxy_every')!r} steps, "
                         f"which this version no longer does (movement needs every step); "
                         f"resuming would mix the two sums: restart the search, or use the "
                         f"bingo version that saved it")
    if fmt not in (STATE_FORMAT, _SAME_AT_EVERY_STEP):
        raise ValueError(f"not a TicketSearch state of this version (format "
                         f"{fmt!r}, expected {STATE_FORMAT!r})")
    mine, theirs = search.config(), {"movement": True, **state["config"]}  # format 3: on
    diff = sorted(k for k in mine if mine[k] != theirs.get(k))
    if diff:
        details = ", ".join(f"{k}: saved {theirs.get(k)!r} vs here {mine[k]!r}" for k in diff)
        raise ValueError(f"saved search has a different configuration ({details}); "
                         f"construct the TicketSearch with the saved settings")
    for name, value in state["initial"].items():
        search._initial[name] = value.to(search._initial[name].device).clone()
    search.rule_state.load(state["state"])
    search.totals = Totals(int(state["totals"]["searches"]),
                           float(state["totals"]["damage_sum"]))
    search.step_count = int(state["step"])
    search.search_seconds = float(state["search_seconds"])
    search.history = [SearchRecord(s, b, list(a)) for s, b, a in state["history"]]
    search.proxies.load_state_dict(state["proxies"])
    search.regression.load_state_dict(state["regression"])
    search._calibration.load_state_dict(state["calibration"])
