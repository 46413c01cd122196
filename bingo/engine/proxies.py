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
from typing import Dict, List, Mapping, Optional, Sequence

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
        self._addresses: Optional[_Addresses] = None

    @property
    def sums(self) -> List[Dict[str, torch.Tensor]]:
        """Per target, its sums by name (views of ``columns``, not copies)."""
        return [{k: self.columns[k][i] for k in self.kinds} for i in range(len(self.targets))]

    def update(self, backend, params: Mapping[str, torch.Tensor],
               reset_to: Mapping[str, torch.Tensor], full: bool = True) -> bool:
        """Fold the gradients now in ``.grad`` into the sums (all of them when ``full``,
        movement alone otherwise, nothing without movement); False (with one warning)
        when a target has no gradient (``step`` called without a backward pass before
        it). Runs on every training step, right after it, where each tensor attribute
        read costs ~0.5 us: on a compiled backend the operands' addresses, checked once,
        are kept (``_Addresses``) and each step re-reads only what may have changed."""
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
        targets = [reset_to[n] for n in self._names] if full else None
        kept = self._addresses
        if kept is None or kept.backend is not backend:
            kept = self._addresses = _Addresses.of(backend, self.columns, self.kinds)
        addresses = kept.read(weights, grads, targets) if kept is not None else None
        if addresses is not None:
            if full:
                backend.proxy_update_at(kept.sizes, addresses, self.decay, self.movement,
                                        kept.device)
            else:
                backend.movement_update_at(kept.sizes, addresses, kept.device)
        else:
            self._update_tensors(backend, weights, grads, targets)
        if full:
            self.steps += 1
        return True

    def _update_tensors(self, backend, weights: List[torch.Tensor], grads: List[torch.Tensor],
                        targets: Optional[List[torch.Tensor]]) -> None:
        """The backend's tensor ops, which check every operand (and send what their
        kernels cannot take to the reference): weights of another dtype or device than
        the sums, non-contiguous tensors, the reference backend."""
        for w, dtype, device in zip(weights, self._dtypes, self._devices):
            if w.dtype is not dtype or w.device != device:
                weights, grads = self._converted(weights, grads)
                break
        if torch.is_grad_enabled():  # the backends' arithmetic must not record a graph
            weights = [w.detach() for w in weights]
        c = self.columns
        if targets is not None:  # the reset target is read by the full update only
            targets = [r if r.dtype is dtype else r.to(dtype)
                       for r, dtype in zip(targets, self._dtypes)]
            backend.proxy_update(c["fisher"], c["reset"], c.get("movement"), grads, weights,
                                 targets, self.decay)
        else:
            backend.movement_update(c["movement"], grads, weights)

    def _converted(self, weights: List[torch.Tensor], grads: List[torch.Tensor]):
        """Weights and gradients in the sums' dtype (e.g. from half weights); sums that
        are not on their weight's device follow it (the model moved)."""
        out_w, out_g = [], []
        for i, (w, g) in enumerate(zip(weights, grads)):
            if self._devices[i] != w.device:
                for k in self.kinds:
                    self.columns[k][i] = self.columns[k][i].to(w.device)
                self._devices[i] = w.device
                self._addresses = None  # the sums moved
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


class _Addresses:
    """The data addresses a compiled backend's ``proxy_update_at``/``movement_update_at``
    take, kept between steps: the sums' (they are the Proxies' own: contiguous float32,
    moved only by ``_converted``, which drops this), and the weights', gradients' and
    reset targets' as last checked. Each step re-reads what can change without notice:
    every weight's address, element count, dtype and layout (a model may swap its
    storage), every gradient's address and layout (``zero_grad(set_to_none=True)``
    gives a new one; torch keeps a gradient's dtype, device and shape those of its
    weight), and on full steps every reset target's; anything unlike what was checked
    is checked in full again, and what fails goes to the backend's tensor ops. Against
    those ops' checks of every operand this saves ~20 us a step (bench/README.md)."""
    __slots__ = ("backend", "device", "sizes", "weights", "targets", "sums")

    def __init__(self, backend, device: torch.device, sizes: List[int],
                 sums: Dict[bool, List[tuple]]):
        self.backend, self.device, self.sizes, self.sums = backend, device, sizes, sums
        self.weights: List[int] = []
        self.targets: List[int] = []

    @classmethod
    def of(cls, backend, columns: Mapping[str, List[torch.Tensor]],
           kinds: Sequence[str]) -> Optional["_Addresses"]:
        """None where the backend has no address ops (the reference) or the sums are not
        float32 on one device."""
        first = columns["fisher"]
        if (getattr(backend, "movement_update_at", None) is None
                or any(f.dtype is not torch.float32 for f in first)
                or len({f.device for f in first}) != 1):
            return None
        sums = {True: [tuple(columns[k][i].data_ptr() for k in kinds)  # the ops' order
                       for i in range(len(first))],
                False: ([(m.data_ptr(),) for m in columns["movement"]]
                        if "movement" in kinds else [])}
        return cls(backend, first[0].device, [f.numel() for f in first], sums)

    def read(self, weights: List[torch.Tensor], grads: List[torch.Tensor],
             targets: Optional[List[torch.Tensor]]) -> Optional[List[int]]:
        """This step's addresses in the ops' order (sums, grad, weight[, target] per
        target), or None when an operand is not contiguous float32 on the sums' device
        with its target's size."""
        f32, out = torch.float32, []
        full = targets is not None
        kept_t = self.targets
        if len(self.weights) != len(weights) or (full and len(kept_t) != len(weights)):
            return self._checked(weights, grads, targets)
        for i, (w, g, sums, p, n) in enumerate(zip(weights, grads, self.sums[full],
                                                    self.weights, self.sizes)):
            if (w.data_ptr() != p or w.dtype is not f32 or not w.is_contiguous()
                    or w.numel() != n):
                return self._checked(weights, grads, targets)
            if not g.is_contiguous():
                return None
            out += sums
            out += (g.data_ptr(), p)
            if full:
                t = targets[i].data_ptr()
                if t != kept_t[i]:
                    return self._checked(weights, grads, targets)
                out.append(t)
        return out

    def _checked(self, weights, grads, targets) -> Optional[List[int]]:
        """Every operand checked in full; their addresses kept when all pass."""
        f32, device = torch.float32, self.device
        operands = [weights, grads] + ([targets] if targets is not None else [])
        for tensors in operands:
            for x, n in zip(tensors, self.sizes):
                if (x.dtype is not f32 or not x.is_contiguous() or x.numel() != n
                        or x.device != device):
                    return None
        self.weights = [w.data_ptr() for w in weights]
        if targets is not None:
            self.targets = [t.data_ptr() for t in targets]
        return self.read(weights, grads, targets)
