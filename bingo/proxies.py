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
    """The running sums for every target, and how many steps fed fisher and reset
    (``steps``; movement sums every step). ``kinds``: the proxies collected (all three,
    or fisher and reset with ``movement=False``, which skips the every-step pass);
    ``columns[k]`` holds proxy k's sums in target order (what the backend ops take);
    ``sums[i]`` is target i's as a dict."""

    def __init__(self, targets: Sequence[Target], like: Mapping[str, torch.Tensor],
                 decay: float = 1.0, movement: bool = True):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"proxy decay must lie in (0, 1] (1 = plain sums), got {decay}")
        self.targets = list(targets)
        self.decay = float(decay)
        self.movement = bool(movement)
        self.kinds = PROXIES if self.movement else ("fisher", "reset")
        self.steps = 0
        self._names = [t.name for t in self.targets]
        self.columns: Dict[str, List[torch.Tensor]] = {
            k: [torch.zeros(t.shape, dtype=_state_dtype(like[t.name]),
                            device=like[t.name].device) for t in self.targets]
            for k in self.kinds}
        self._dtypes = [f.dtype for f in self.columns["fisher"]]
        self._devices = [f.device for f in self.columns["fisher"]]
        self._warned = False

    @property
    def sums(self) -> List[Dict[str, torch.Tensor]]:
        """Per target, its sums by name (views of ``columns``, not copies)."""
        return [{k: self.columns[k][i] for k in self.kinds} for i in range(len(self.targets))]

    def update(self, backend, params: Mapping[str, torch.Tensor],
               reset_to: Mapping[str, torch.Tensor], full: bool = True) -> bool:
        """Fold the gradients now in ``.grad`` into the sums (all of them when ``full``,
        movement alone otherwise, nothing without movement); False (with one warning)
        when a target has no gradient (``step`` called without a backward pass before
        it). Runs on every training step, so the common case (weights of the sums' dtype
        and device) is a few attribute reads per target; the backend op checks its
        operands."""
        if not (full or self.movement):
            return True
        weights = [params[n] for n in self._names]
        grads = [w.grad for w in weights]
        if any(g is None for g in grads):
            if not self._warned:
                self._warned = True
                warnings.warn("TicketSearch.step found no gradient on the prunable weights, "
                              "so the gradient proxies (fisher, reset, movement) skip this "
                              "step; call step() after loss.backward() and "
                              "optimizer.step(), before zero_grad()", RuntimeWarning,
                              stacklevel=3)
            return False
        for w, dtype, device in zip(weights, self._dtypes, self._devices):
            if w.dtype is not dtype or w.device != device:
                weights, grads = self._converted(weights, grads)
                break
        if torch.is_grad_enabled():  # the backends' arithmetic must not record a graph
            weights = [w.detach() for w in weights]
        c = self.columns
        if full:  # the reset target is read by the full update only
            targets = [r if r.dtype is dtype else r.to(dtype)
                       for r, dtype in zip((reset_to[n] for n in self._names), self._dtypes)]
            backend.proxy_update(c["fisher"], c["reset"], c.get("movement"), grads, weights,
                                 targets, self.decay)
            self.steps += 1
        elif self.movement:
            backend.movement_update(c["movement"], grads, weights)
        return True

    def _converted(self, weights: List[torch.Tensor], grads: List[torch.Tensor]):
        """Weights and gradients in the sums' dtype (e.g. from half weights); sums that
        are not on their weight's device follow it (the model moved)."""
        out_w, out_g = [], []
        for i, (w, g) in enumerate(zip(weights, grads)):
            if self._devices[i] != w.device:
                for k in self.kinds:
                    self.columns[k][i] = self.columns[k][i].to(w.device)
                self._devices[i] = w.device
            dtype = self._dtypes[i]
            if w.dtype is not dtype:
                w, g = w.detach().to(dtype), g.to(dtype)
            out_w.append(w)
            out_g.append(g)
        return out_w, out_g

    def mean_fisher(self, i: int) -> torch.Tensor:
        """F̄ of target i: the decayed sum over its effective number of steps."""
        if self.decay == 1.0:
            n = self.steps
        else:
            n = (1.0 - self.decay ** self.steps) / (1.0 - self.decay)
        return self.columns["fisher"][i] / max(n, 1e-12)

    def state_dict(self) -> Dict:
        return {"decay": self.decay, "steps": self.steps,
                "sums": [{k: v.clone() for k, v in s.items()} for s in self.sums]}

    def load_state_dict(self, state: Mapping) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        for i, saved in enumerate(state["sums"]):
            for k in self.kinds:
                self.columns[k][i].copy_(saved[k])


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32
