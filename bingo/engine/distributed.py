"""A search that spans the processes of a ``torch.distributed`` run (``Ranks``).

Under DistributedDataParallel every rank holds the same weights and, after the backward's
all-reduce, the same gradients, so whatever a search derives from them alone (the gradient
proxies, the rule state, the scores) is the same on every rank without exchanging it.
What differs is the data: each rank sees its own share of every global batch and keeps its
own share of the kept examples. A search step splits its work one of two ways
(``split``), exchanging only the O(K) metrics either way:

* ``"examples"`` (the default): every rank evaluates all K variants on its own slice of
  the global batch, and the K + 1 metrics are averaged over the ranks weighted by their
  examples (one all-reduce): the same numbers as one process on the global batch;
* ``"variants"``: the ranks' batches are gathered (the global batch, in rank order) and
  rank r evaluates variants r, r + W, ... on it; each metric comes from its owner.

Measured on the 2-core CPU (bench/README.md): "examples" is the faster, since a pass over
half the batch halves the unchanged model's pass too and nothing of the batch travels.
A measured loss of a candidate mask is the mean over every rank's kept examples (one
all-reduce of a sum and a count).
The rule state is split by elements (``element_range``): a step's K changes update, on
rank r, only the r-th contiguous share of each target's elements (the same updates in the
same order as one process, so the same bits), and ``gather_elements`` copies the shares
to every rank when the state is read.
Every decision is then taken on identical numbers, in the same order, on every rank:
masks and scores are identical by construction, and ``agree`` checks it where it is cheap.

A collective that fails (a peer that raised and left) raises ``RanksFailed`` naming the
operation, instead of gloo's bare socket error.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

AUTO = "auto"
SPLITS = ("examples", "variants")


class RanksFailed(RuntimeError):
    """A collective of bingo's failed: another rank failed or left first."""


def local_module(model: nn.Module) -> nn.Module:
    """The module a search reads and masks: a DistributedDataParallel's ``.module``
    (its forward would run DDP's own collectives inside a measurement), else the model."""
    from torch.nn.parallel import DistributedDataParallel
    return model.module if isinstance(model, DistributedDataParallel) else model


class Ranks:
    """The processes one search spans: ``rank`` of ``world`` (1 and 0 outside
    ``torch.distributed``, where every method is the identity and costs nothing).

    ``group``: ``"auto"`` (the default group once ``torch.distributed`` is initialized with
    more than one process), a ``ProcessGroup``, or None (this process alone); ``split``:
    how a search step divides its work (see the module docstring)."""

    def __init__(self, group: Any = AUTO, split: str = "examples"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} (each rank all variants on its "
                             f"own examples, or its share of the variants on the gathered "
                             f"batch), got {split!r}")
        self.split = split
        if isinstance(group, str) and group == AUTO:
            group = dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
        self.group = group
        self.world = dist.get_world_size(group) if group is not None else 1
        self.rank = dist.get_rank(group) if group is not None else 0
        self.active = self.world > 1
        # NCCL exchanges CUDA tensors only; gloo takes CPU ones
        nccl = group is not None and dist.get_backend(group) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else \
            torch.device("cpu")

    def __repr__(self) -> str:
        return f"Ranks(rank={self.rank}, world={self.world})"

    def _collective(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, group=self.group, **kwargs)
        except (RuntimeError, ValueError) as err:  # gloo/NCCL: a peer is gone or failed
            raise RanksFailed(
                f"bingo: the {what} across {self.world} ranks failed on rank {self.rank} "
                f"({err}); another rank most likely failed first: its own error is the "
                f"cause. Every rank must run the same search steps and estimators in the "
                f"same order") from err

    def _reduced(self, what: str, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (one all-reduce on the group's device), on CPU."""
        values = values.to(self.device)
        self._collective(what, dist.all_reduce, values)
        return values.cpu()

    def portion(self, total: int) -> int:
        """This rank's share of ``total`` kept examples (the first ``total % W`` ranks keep
        one more)."""
        return total // self.world + (self.rank < total % self.world)

    # ------------------------------------------------------------------ the search step
    def search_batch(self, inputs: torch.Tensor, labels: torch.Tensor, variants: int,
                     whole: bool = False) -> Tuple[torch.Tensor, torch.Tensor, Optional[range]]:
        """What this rank measures a step on: (inputs, labels, its variants or None: all).
        ``whole``: the arguments are the global batch, the same on every rank (nothing is
        gathered; "examples" measures this rank's slice of it)."""
        if not self.active:
            return inputs, labels, None
        if self.split == "examples":
            return (*(self.slice(inputs, labels) if whole else (inputs, labels)), None)
        if whole:
            return inputs, labels, self.share(variants)
        return (*self.gather_batch(inputs, labels), self.share(variants))

    def slice(self, inputs: torch.Tensor,
              labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of a global batch: the r-th of W near-equal parts (the split
        of ``tensor_split``, the harness's training loop's)."""
        if not self.active:
            return inputs, labels
        return inputs.tensor_split(self.world)[self.rank], \
            labels.tensor_split(self.world)[self.rank]

    @staticmethod
    def fingerprint(inputs: torch.Tensor, labels: torch.Tensor) -> List[float]:
        """Three numbers that differ between two batches of different sizes, inputs or
        labels (or labels in another order) almost surely: what ranks passed the global
        batch compare."""
        x = inputs.detach()
        y = labels.detach().reshape(len(labels), -1).double()
        order = torch.arange(1, len(x) + 1, dtype=torch.float64, device=x.device)
        return [float(len(x)), float(x.sum(dtype=torch.float64)), float((y.sum(1) * order).sum())]

    def search_metrics(self, before: float, after: Sequence[float], variants: int,
                       count: int, batch: Optional[Sequence[float]] = None
                       ) -> Tuple[float, List[float]]:
        """Every rank's metrics of a step made one: averaged over the ranks' examples
        (``count`` here), or each variant's from the rank that evaluated it. ``batch``: this
        rank's ``fingerprint`` of a global batch, compared across the ranks in the same
        exchange (a ValueError on every rank where they differ)."""
        if not self.active:
            return before, list(after)
        marks = self._marks(batch)
        if self.split == "variants":
            return self.combine(before, after, variants, marks)
        values = self._reduced("variant metrics all-reduce", torch.cat([torch.tensor(
            [before, *after, 1.0], dtype=torch.float64) * count, marks]))
        self._check_marks(values[len(values) - len(marks):])
        values = values[:len(values) - len(marks)]
        values = values[:-1] / values[-1]
        return float(values[0]), values[1:].tolist()

    def _marks(self, batch: Optional[Sequence[float]]) -> torch.Tensor:
        """W slots of ``batch`` (this rank's in its own, zeros elsewhere): summed over the
        ranks, every rank holds every rank's fingerprint exactly."""
        if batch is None:
            return torch.zeros(0, dtype=torch.float64)
        marks = torch.zeros(self.world, len(batch), dtype=torch.float64)
        marks[self.rank] = torch.tensor(list(batch), dtype=torch.float64)
        return marks.reshape(-1)

    def _check_marks(self, marks: torch.Tensor) -> None:
        if not len(marks):
            return
        every = marks.reshape(self.world, -1)
        same = torch.isclose(every, every[0], rtol=0, atol=0, equal_nan=True).all(1)
        differ = [r for r in range(self.world) if not same[r]]  # NaN inputs: the metric's
        if differ:
            raise ValueError(
                f"bingo: step(..., global_batch=True) got different batches on ranks "
                f"{differ} than on rank 0 (sizes {every[:, 0].long().tolist()}): pass every "
                f"rank the same whole global batch (the one its DistributedDataParallel "
                f"slice comes from), or pass each rank its own slice with "
                f"global_batch=False")

    def share(self, variants: int) -> Optional[range]:
        """The variants this rank evaluates: r, r + W, ... (None: all, one process)."""
        return range(self.rank, variants, self.world) if self.active else None

    def gather_batch(self, inputs: torch.Tensor,
                     labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The global batch: every rank's (inputs, labels), concatenated in rank order."""
        if not self.active:
            return inputs, labels
        sizes = torch.zeros(self.world, dtype=torch.int64)
        sizes[self.rank] = len(inputs)
        sizes = self._reduced("batch size exchange", sizes)
        return self._gather(inputs, sizes), self._gather(labels, sizes)

    def _gather(self, t: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        most = int(sizes.max())
        padded = torch.zeros((most,) + tuple(t.shape[1:]), dtype=t.dtype, device=self.device)
        padded[:len(t)] = t.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self._collective("batch gather", dist.all_gather, parts, padded)
        return torch.cat([p[:int(n)] for p, n in zip(parts, sizes)]).to(t.device)

    def combine(self, before: float, after: Sequence[float], variants: int,
                marks: Optional[torch.Tensor] = None) -> Tuple[float, List[float]]:
        """Every variant's metric from the rank that evaluated it, and rank 0's metric of
        the unchanged model (all ranks computed it on the same batch; one is taken so that
        every rank holds the same bits): one all-reduce of K + 1 numbers (and ``marks``,
        see ``search_metrics``)."""
        if not self.active:
            return before, list(after)
        marks = torch.zeros(0, dtype=torch.float64) if marks is None else marks
        values = torch.zeros(variants + 1 + len(marks), dtype=torch.float64)
        values[variants + 1:] = marks
        if self.rank == 0:
            values[0] = before
        owned = self.share(variants)
        if len(after) != len(owned):
            raise RuntimeError(f"rank {self.rank} measured {len(after)} variants, "
                               f"expected {len(owned)}")
        values[1 + torch.tensor(list(owned), dtype=torch.int64)] = torch.tensor(
            list(after), dtype=torch.float64)
        values = self._reduced("variant metrics exchange", values)
        self._check_marks(values[variants + 1:])
        return float(values[0]), values[1:variants + 1].tolist()

    # ------------------------------------------------------------------ the rule state
    def element_range(self, size: int, rank: Optional[int] = None) -> Tuple[int, int]:
        """The elements [lo, hi) of a target of ``size`` elements whose rule state ``rank``
        (default: this one) updates in a search step: contiguous, balanced, and computed
        alike on every rank."""
        r = self.rank if rank is None else rank
        return size * r // self.world, size * (r + 1) // self.world

    def gather_elements(self, tensors: Sequence[torch.Tensor]) -> None:
        """Every rank's own ``element_range`` of each flat tensor copied into that range on
        every rank, in place: one all-gather per dtype of copies, so every rank then holds
        the same bits."""
        if not self.active or not tensors:
            return
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            ranges = [[self.element_range(t.numel(), r) for t in group]
                      for r in range(self.world)]
            most = max(sum(hi - lo for lo, hi in rs) for rs in ranges)
            mine = torch.zeros(most, dtype=dtype, device=self.device)
            at = 0
            for t, (lo, hi) in zip(group, ranges[self.rank]):
                mine[at:at + hi - lo] = t[lo:hi]
                at += hi - lo
            parts = [torch.empty_like(mine) for _ in range(self.world)]
            self._collective("rule state gather", dist.all_gather, parts, mine)
            for r, part in enumerate(parts):
                if r == self.rank:
                    continue
                at = 0
                for t, (lo, hi) in zip(group, ranges[r]):
                    t[lo:hi] = part[at:at + hi - lo].to(t.device)
                    at += hi - lo

    # ------------------------------------------------------------------ measurements
    def mean(self, value: float, count: int) -> float:
        """The mean over every rank's examples of a per-rank mean ``value`` of ``count``
        examples (float64 sums)."""
        if not self.active:
            return value
        t = self._reduced("measured loss all-reduce",
                          torch.tensor([value * count, float(count)], dtype=torch.float64))
        return float(t[0] / t[1])

    def mean_tensors(self, tensors: Dict[str, torch.Tensor],
                     count: int) -> Dict[str, torch.Tensor]:
        """Per-rank means of ``count`` examples each (gradients), averaged over every rank's
        examples, weighted by their counts; one all-reduce of the flattened tensors and the
        count."""
        if not self.active:
            return tensors
        names = list(tensors)
        flat = torch.cat([tensors[n].detach().reshape(-1).double() * count for n in names]
                         + [torch.tensor([float(count)], dtype=torch.float64,
                                         device=tensors[names[0]].device)]).to(self.device)
        self._collective("gradient all-reduce", dist.all_reduce, flat)
        flat = flat[:-1] / flat[-1]
        out, at = {}, 0
        for n in names:
            t = tensors[n]
            out[n] = flat[at:at + t.numel()].view(t.shape).to(device=t.device, dtype=t.dtype)
            at += t.numel()
        return out

    def total(self, count: int) -> int:
        """The sum of ``count`` over the ranks."""
        if not self.active:
            return count
        return int(self._reduced("count all-reduce", torch.tensor([count], dtype=torch.int64)))

    # ------------------------------------------------------------------ checks
    def agree_search(self, config: Dict[str, Any], calibration: int,
                     initial: Sequence[torch.Tensor]) -> None:
        """Every rank must search the same weights with the same settings."""
        if not self.active:
            return
        text = repr(sorted(config.items()) + [calibration, self.split]).encode()
        self.agree("the search settings", [torch.frombuffer(bytearray(text), dtype=torch.uint8)],
                   "build the TicketSearch with the same arguments (seed included) on every "
                   "rank")
        self.agree("the initial weights", initial,
                   "wrap the model in DistributedDataParallel (which copies rank 0's weights "
                   "to every rank) before building the TicketSearch, or seed every rank alike")

    def agree(self, what: str, tensors: Sequence[torch.Tensor], fix: str) -> None:
        """Raise on every rank, naming ``what`` and ``fix``, unless every rank holds the same
        bytes in ``tensors`` (compared by a 64-bit digest: one all-gather of W numbers)."""
        if not self.active:
            return
        digest = hashlib.blake2b(digest_size=8)
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        mine = torch.tensor([int.from_bytes(digest.digest(), "little", signed=True)],
                            dtype=torch.int64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.world)]
        self._collective(f"{what} check", dist.all_gather, every, mine)
        differ = [r for r, d in enumerate(every) if int(d) != int(every[0])]
        if differ:
            raise RuntimeError(f"bingo: {what} differ between ranks (ranks {differ} against "
                               f"rank 0): {fix}")
