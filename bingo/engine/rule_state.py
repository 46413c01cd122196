"""The significance rule's per-element state of every target, and who updates which part.

One process folds every step's K changes into every element. A search spanning W ranks
splits the state by elements instead (``Ranks.element_range``: rank r the r-th contiguous
share of each target): each rank applies the step's changes, which every rank holds after
the exchange, to its share only, with the same updates in the same order as one process
(so the same bits), and the shares are gathered (``whole``) when the state is read:
the scores, the checkpoint, the ranks' agreement check. A step's accumulation then costs
each rank 1/W of one process's.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence

import torch

from .distributed import Ranks
from .reference import SearchPlan
from .rules import Rule, SearchChange, State
from .targets import Target


class RuleState:
    """Flat per-element state tensors (one dict a target, ``rule.init_state``), on the
    device and in the float precision of each target's parameter."""

    def __init__(self, rule: Rule, targets: Sequence[Target],
                 params: Mapping[str, torch.Tensor], ranks: Ranks):
        self.rule, self.targets, self.ranks = rule, list(targets), ranks
        self._states: List[State] = []
        for t in self.targets:
            p = params[t.name]
            dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            self._states.append(rule.init_state(torch.Size([t.size]), dtype, p.device))
        # this rank's shares: each as a target of its own, and views of its state (the
        # state tensors are only ever written in place, so the views stay theirs)
        self._share_targets: List[Target] = []
        self._share_states: List[State] = []
        for t, state in zip(self.targets, self._states):
            lo, hi = ranks.element_range(t.size)
            if hi > lo:
                self._share_targets.append(dataclasses.replace(t, offset=t.offset + lo,
                                                               size=hi - lo))
                self._share_states.append({k: v[lo:hi] for k, v in state.items()})
        self._gathered = True

    def accumulate(self, backend: Any, plan: SearchPlan,
                   changes: Sequence[SearchChange]) -> None:
        """Fold one step's changes in: every element in one process, this rank's share
        spanning ranks."""
        if not self.ranks.active:
            backend.accumulate(plan, self.targets, self.rule, self._states, changes)
            return
        backend.accumulate(plan, self._share_targets, self.rule, self._share_states, changes)
        self._gathered = False

    def whole(self) -> List[State]:
        """Every target's whole state (spanning ranks, the shares gathered first: one
        all-gather, so every rank must call it at the same point)."""
        if not self._gathered:
            self.ranks.gather_elements([v for s in self._states for v in s.values()])
            self._gathered = True
        return self._states

    def load(self, saved: Sequence[Dict[str, torch.Tensor]]) -> None:
        """Copy a whole saved state in (every rank loads the same one)."""
        for mine, theirs in zip(self._states, saved):
            for k, v in theirs.items():
                mine[k].copy_(v)
        self._gathered = True
