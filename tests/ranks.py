"""Running a function on W gloo processes on loopback, for the distributed tests.

``launch(worker, world, *args)`` spawns W processes (one thread each), joins them by a
deadline (a hang fails the test, never the suite's time), and returns each rank's
``{"result": ...}`` or ``{"error": "Type: message"}``. Workers are module-level functions
(spawn pickles them by name) taking ``(rank, world, *args)``."""
from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

DEADLINE = 150  # seconds for a whole launch; the tests' runs take a few


def _entry(worker: Callable, rank: int, world: int, folder: str, args: tuple) -> None:
    import torch.distributed as dist
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    out: Dict[str, Any]
    try:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                                world_size=world)
        try:
            out = {"result": worker(rank, world, *args)}
        finally:
            dist.destroy_process_group()
    except BaseException as err:  # reported to the parent, which asserts on it
        out = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
    torch.save(out, Path(folder) / f"rank{rank}.pt")


def launch(worker: Callable, world: int, *args: Any, deadline: float = DEADLINE) -> List[dict]:
    folder = tempfile.mkdtemp(prefix="bingo-ranks-")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_entry, args=(worker, r, world, folder, args))
             for r in range(world)]
    for p in procs:
        p.start()
    end = time.monotonic() + deadline
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    if hung:
        raise AssertionError(f"ranks {hung} were still running after {deadline} s: a hang")
    out = []
    for r in range(world):
        path = Path(folder) / f"rank{r}.pt"
        if not path.exists():
            raise AssertionError(f"rank {r} died without a report (exit code "
                                 f"{procs[r].exitcode})")
        out.append(torch.load(path, weights_only=False))
    return out
