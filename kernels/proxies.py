"""Per-weight proxies of one training step (bingo.engine.proxies) in ONE elementwise launch for
every target: fisher <- decay * fisher + g², reset += |g (target - w)|, movement -= g w
(``proxy_update``; without movement for a search that does not collect it), or movement
alone (``movement_update``, the steps in between).
Each state is read and written once, the gradient, weight and target read once.

These run after every training step, where a launch costs more than the arithmetic
(a LeNet-300-100 step moves ~6 MB): one launch per target cost ~60 us each on an H100.
So the targets' data addresses, sizes and first programs go in one int64 table on the
device, one per set of target sizes; the launch, captured as a CUDA graph from the
second step on, costs a graph replay (Triton's own launch path cost ~60 us of Python
right after a training step), plus a small copy on the steps whose gradients moved."""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional

import torch
import triton
import triton.language as tl

from .launch import elementwise_block


@triton.jit
def _locate(table, T: tl.constexpr, A: tl.constexpr, ALIGNED: tl.constexpr,
            BLOCK: tl.constexpr):
    """This program's target j and the offsets and mask of its block. ``table``: T*A
    addresses (target-major), then T sizes, then T first programs. ALIGNED: every size
    is a multiple of 4 (and every address of 16 bytes), so the masked accesses can be
    vectors of 4."""
    pid = tl.program_id(0)
    j = pid * 0
    for t in tl.static_range(1, T):
        j += (pid >= tl.load(table + T * (A + 1) + t)).to(tl.int32)
    n = tl.load(table + T * A + j)
    if ALIGNED:
        n = tl.multiple_of(n, 4)
    first = tl.load(table + T * (A + 1) + j)
    offs = (pid - first).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return j, offs, offs < n


@triton.jit
def _operand(table, j, a: tl.constexpr, A: tl.constexpr, ALIGNED: tl.constexpr):
    """Target j's a-th float32 operand (16-byte aligned where ALIGNED)."""
    p = tl.load(table + j * A + a).to(tl.pointer_type(tl.float32))
    if ALIGNED:
        p = tl.multiple_of(p, 16)
    return p


@triton.jit
def proxy_update_kernel(table, decay, T: tl.constexpr, MOVEMENT: tl.constexpr,
                        ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    A: tl.constexpr = 6 if MOVEMENT else 5  # fisher, reset, [movement,] grad, weight, target
    j, offs, inside = _locate(table, T, A, ALIGNED, BLOCK)
    g = tl.load(_operand(table, j, A - 3, A, ALIGNED) + offs, mask=inside)
    w = tl.load(_operand(table, j, A - 2, A, ALIGNED) + offs, mask=inside)
    t = tl.load(_operand(table, j, A - 1, A, ALIGNED) + offs, mask=inside)
    fisher = _operand(table, j, 0, A, ALIGNED) + offs
    reset = _operand(table, j, 1, A, ALIGNED) + offs
    tl.store(fisher, tl.load(fisher, mask=inside) * decay + g * g, mask=inside)
    tl.store(reset, tl.load(reset, mask=inside) + tl.abs(g * (t - w)), mask=inside)
    if MOVEMENT:
        movement = _operand(table, j, 2, A, ALIGNED) + offs
        tl.store(movement, tl.load(movement, mask=inside) - g * w, mask=inside)


@triton.jit
def movement_update_kernel(table, T: tl.constexpr, ALIGNED: tl.constexpr,
                           BLOCK: tl.constexpr):
    j, offs, inside = _locate(table, T, 3, ALIGNED, BLOCK)  # movement, grad, weight
    g = tl.load(_operand(table, j, 1, 3, ALIGNED) + offs, mask=inside)
    w = tl.load(_operand(table, j, 2, 3, ALIGNED) + offs, mask=inside)
    movement = _operand(table, j, 0, 3, ALIGNED) + offs
    tl.store(movement, tl.load(movement, mask=inside) - g * w, mask=inside)


class _Launch:
    """One cached launch for a set of targets (an op, its scalars, the targets' sizes):
    the device table, the addresses now in it, its program count, whether the vector
    path applies, and (on a GPU, from the second use on) the launch captured as a CUDA
    graph. The graph bakes in the table's pointer, not its contents, so a step whose
    tensors moved (a new ``.grad``) writes the new addresses into the table and replays
    the same graph: one small copy and one replay instead of Triton's launch."""
    __slots__ = ("table", "addresses", "block", "programs", "aligned", "graph")

    def __init__(self, device: torch.device, sizes: List[int], addresses: List[int],
                 capturing: bool = False):
        self.block = block = elementwise_block()  # the table's programs assume it
        first = [0]
        for n in sizes:
            first.append(first[-1] + triton.cdiv(n, block))
        values = addresses + sizes + first[:-1]
        if capturing:  # a copy from host memory is not allowed in a capture: one fill
            self.table = torch.empty(len(values), dtype=torch.int64, device=device)
            for i, v in enumerate(values):  # per value, replayed by the caller's graph
                self.table[i].fill_(v)
        else:
            self.table = torch.tensor(values, dtype=torch.int64).to(device)
        self.addresses = addresses
        self.programs = first[-1]
        self.aligned = self._aligned(sizes, addresses)
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    @staticmethod
    def _aligned(sizes: List[int], addresses: List[int]) -> bool:
        return all(a % 16 == 0 for a in addresses) and all(n % 4 == 0 for n in sizes)

    def point_at(self, sizes: List[int], addresses: List[int]) -> bool:
        """Write new addresses into the table, ordered on the current stream before the
        launch that reads them (the pageable source is staged before ``copy_`` returns,
        so nothing waits). False: the alignment changed, so this launch's
        specialization (and graph) no longer fits."""
        if self._aligned(sizes, addresses) != self.aligned:
            return False
        self.table[:len(addresses)].copy_(torch.tensor(addresses, dtype=torch.int64),
                                          non_blocking=True)
        self.addresses = addresses
        return True


_LAUNCHES: Dict[tuple, _Launch] = {}
_MAX_LAUNCHES = 16
_GRAPHS = [True]  # False once a capture failed: plain launches from then on
_CAPTURED: List[_Launch] = []  # tables of launches inside callers' graphs: kept alive
_MAX_CAPTURED = 64


def _run(key: tuple, device: torch.device, sizes: List[int], addresses: List[int],
         launch: Callable[[_Launch], None]) -> None:
    """Launch through the cache. ``key`` names everything the launch bakes in besides the
    addresses (the op, its scalars, the sizes, the device). Contents seen once are
    launched plainly; a graph is captured when they come back, on a side stream, and
    replayed on the current stream (steps are expected on one stream, as the training
    step's own kernels are). Inside a capture of the caller's own (a training step
    captured whole, after its warm-up steps), a table of its own, filled by kernels,
    and a plain launch go into the caller's graph; the cache is left alone (nothing in
    a capture runs until the caller replays it)."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        if len(_CAPTURED) >= _MAX_CAPTURED:
            _CAPTURED.pop(0)
        _CAPTURED.append(_Launch(device, sizes, addresses, capturing=True))
        launch(_CAPTURED[-1])
        return
    entry = _LAUNCHES.get(key)
    if entry is not None and entry.addresses != addresses \
            and not entry.point_at(sizes, addresses):
        entry = None
    if entry is None:
        if len(_LAUNCHES) >= _MAX_LAUNCHES:
            _LAUNCHES.clear()
        entry = _LAUNCHES[key] = _Launch(device, sizes, addresses)
    elif entry.graph is None and device.type == "cuda" and _GRAPHS[0]:
        try:
            entry.graph = _capture(lambda: launch(entry), device)
        except RuntimeError as error:  # a platform without graphs: plain launches then
            _GRAPHS[0] = False
            warnings.warn(f"bingo: the Triton proxy update could not be captured as a CUDA "
                          f"graph ({error}); launching it plainly from now on, which costs "
                          f"~60 us more per training step", RuntimeWarning, stacklevel=2)
    if entry.graph is not None:
        entry.graph.replay()
    else:
        launch(entry)


def _capture(launch: Callable[[], None], device: torch.device) -> torch.cuda.CUDAGraph:
    """``launch`` captured as a CUDA graph (not run). Unlike ``torch.cuda.graph`` this
    neither synchronizes nor empties the allocator's cache (the caller's training loop
    goes on undisturbed)."""
    graph = torch.cuda.CUDAGraph()
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            launch()
        finally:
            graph.capture_end()
    current.wait_stream(side)
    return graph


def proxy_update(sizes: List[int], addresses: List[int], decay: float, moving: bool,
                 device: torch.device) -> None:
    """In place on contiguous float32 states, one launch: ``addresses`` holds each
    target's fisher, reset, movement (if ``moving``), grad, weight, target data addresses,
    ``sizes`` each target's element count (as ``bingo.engine.fused.foreach`` gathers them)."""
    decay = float(decay)
    _run(("proxy_update", device, decay, moving, *sizes), device, sizes,
         addresses, lambda e: proxy_update_kernel[(e.programs,)](
             e.table, decay, T=len(sizes), MOVEMENT=moving, ALIGNED=e.aligned,
             BLOCK=e.block))


def movement_update(sizes: List[int], addresses: List[int], device: torch.device) -> None:
    """In place on contiguous float32 tensors, one launch (movement, grad, weight per
    target, as ``proxy_update``)."""
    _run(("movement_update", device, *sizes), device, sizes, addresses,
         lambda e: movement_update_kernel[(e.programs,)](
             e.table, T=len(sizes), ALIGNED=e.aligned, BLOCK=e.block))
