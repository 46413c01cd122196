"""Per-weight proxies accumulated from the gradients training already computes.

After each ``optimizer.step()`` a :class:`~bingo.TicketSearch` folds the step's gradient
g (still in ``.grad``), the weight w and the search's reset target r (the initial values
or zeros) into three running sums per weight, with one fused pass over every target
(the backend ops ``proxy_update`` and ``movement_update``, one call per step):

* ``fisher``   F <- decay * F + g²: the empirical Fisher diagonal; ½ F̄ (w - r)² is the
               OBD estimate of the loss increase when w is reset to r;
* ``reset``    Σ |g (r - w)|: the first-order size of the reset, step by step;
* ``movement`` -Σ g w (Sanh et al.): weights that training pushes away from zero score
               high, whatever their size.

Fisher and reset are sums of non-negative terms: every ``proxy_every``-th step
(``DEFAULT_PROXY_EVERY``) estimates them as well, at a fraction of the memory traffic.
Movement is a signed sum whose gradient noise cancels only over consecutive steps
(under SGD it telescopes to about (w² − w0²)/2lr): sampled every 3rd step it ranked
LeNet's weights at chance (33% at 90% sparsity against 96% from every step), so it is
folded in on every step, alone (``movement_update``: the movement sum read and written)
between the full updates. No extra forward or backward pass.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Mapping, Sequence

import torch

from .targets import Target

PROXIES = ("fisher", "reset", "movement")
# Fisher and reset from every 3rd step by default: on 2 CPU cores, after a training step
# the full update is a DRAM stream (~28 bytes a weight, 8-11% of an MLP's Adam step);
# movement alone on the other steps is 8 bytes (bench/README.md, docs/results.md).
DEFAULT_PROXY_EVERY = 3


class Proxies:
    """The three running sums for every target, and how many steps fed fisher and reset
    (``steps``; movement sums every step)."""

    def __init__(self, targets: Sequence[Target], like: Mapping[str, torch.Tensor],
                 decay: float = 1.0):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"proxy decay must lie in (0, 1] (1 = plain sums), got {decay}")
        self.targets = list(targets)
        self.decay = float(decay)
        self.steps = 0
        self.sums: List[Dict[str, torch.Tensor]] = [
            {k: torch.zeros(t.shape, dtype=_state_dtype(like[t.name]),
                            device=like[t.name].device) for k in PROXIES}
            for t in self.targets]
        self._warned = False

    def update(self, backend, params: Mapping[str, torch.Tensor],
               reset_to: Mapping[str, torch.Tensor], full: bool = True) -> bool:
        """Fold the gradients now in ``.grad`` into the sums (all three when ``full``,
        movement alone otherwise); False (with one warning) when a target has no gradient
        (``step`` called without a backward pass before it)."""
        grads, weights, targets = [], [], []
        for t, sums in zip(self.targets, self.sums):
            w = params[t.name]
            g = w.grad
            if g is None:
                if not self._warned:
                    self._warned = True
                    warnings.warn("TicketSearch.step found no gradient on the prunable weights, "
                                  "so the gradient proxies (fisher, reset, movement) skip this "
                                  "step; call step() after loss.backward() and "
                                  "optimizer.step(), before zero_grad()", RuntimeWarning,
                                  stacklevel=3)
                return False
            dtype = sums["fisher"].dtype
            if w.dtype is not dtype:  # e.g. half weights
                w, g = w.detach().to(dtype), g.to(dtype)
            if sums["fisher"].device != w.device:  # the model moved: the sums follow it
                for k in PROXIES:
                    sums[k] = sums[k].to(w.device)
            grads.append(g)
            weights.append(w)
            if full:  # the reset target is read by the full update only
                r = reset_to[t.name]
                targets.append(r if r.dtype is dtype else r.to(dtype))
        if torch.is_grad_enabled():  # the backends' arithmetic must not record a graph
            weights = [w.detach() for w in weights]
        if full:
            backend.proxy_update(*([s[k] for s in self.sums] for k in PROXIES), grads,
                                 weights, targets, self.decay)
            self.steps += 1
        else:
            backend.movement_update([s["movement"] for s in self.sums], grads, weights)
        return True

    def mean_fisher(self, i: int) -> torch.Tensor:
        """F̄ of target i: the decayed sum over its effective number of steps."""
        if self.decay == 1.0:
            n = self.steps
        else:
            n = (1.0 - self.decay ** self.steps) / (1.0 - self.decay)
        return self.sums[i]["fisher"] / max(n, 1e-12)

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "steps": self.steps,
                "sums": [{k: v.clone() for k, v in s.items()} for s in self.sums]}

    def load_state_dict(self, state: Mapping) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        for mine, saved in zip(self.sums, state["sums"]):
            for k in PROXIES:
                mine[k].copy_(saved[k])


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32
