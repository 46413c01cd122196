"""One search step spanning 2 gloo ranks (one thread each, DistributedDataParallel)
against the same step in one process with one thread, on the same global batches of real
MNIST (K = 8 by default): with ``--split examples`` (the default) each rank evaluates all
K variants on its half of the batch, with ``--split variants`` K / 2 of them on the
gathered batch; either way the ranks exchange K + 1 numbers, then each folds all K into
its half of the rule state.
Prints the median step (search.step alone, communication included), the median of a
whole loop iteration (training step, DDP's all-reduce and search step) and each rank's
kept-example memory. ``--global-batch``: every rank passes the whole global batch
(``step(..., global_batch=True)``), so "variants" gathers nothing.

    python bench/bench_ranks.py --data-dir ../shared/data [--split variants] [--batch 128]

Timings, never a test: nothing here asserts a speed (bench/README.md has the figures)."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ranks import launch  # noqa: E402  (the tests' gloo launcher, on loopback)

STEPS, WARMUP = 60, 10


def _run(rank: int, world: int, args) -> dict:
    """One rank's (or the single process's) run, started by ``tests.ranks.launch``, which
    sets one thread and the gloo group (of one process for the single run)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import bingo
    from bingo.harness.data import load_mnist
    from bingo.harness.models import build_model
    train = load_mnist(args.data_dir).train
    torch.manual_seed(0)
    model = build_model(args.model)
    net = DistributedDataParallel(model) if world > 1 else model
    search = bingo.TicketSearch(net, variants=args.variants, calibration=2048,
                                rank_split=args.split)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    times, loop = [], []
    for i in range(STEPS):
        start = time.perf_counter()
        x = train.images[i * args.batch:(i + 1) * args.batch]
        y = train.labels[i * args.batch:(i + 1) * args.batch]
        xl, yl = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
        opt.zero_grad()
        F.cross_entropy(net(xl), yl).backward()
        opt.step()
        if world > 1 and args.barrier:  # the ranks enter the step together: no skew
            dist.barrier()
        t = time.perf_counter()
        if args.global_batch:
            search.step(x, y, global_batch=True)
        else:
            search.step(xl, yl)
        times.append(time.perf_counter() - t)
        loop.append(time.perf_counter() - start)
    kept = sum(t.numel() * t.element_size() for t in search.calibration_batch())
    return {"median_ms": 1e3 * statistics.median(times[WARMUP:]), "kept_mb": kept / 2**20,
            "loop_ms": 1e3 * statistics.median(loop[WARMUP:]), "backend": search.backend}


def measure(args, world: int) -> list:
    out = launch(_run, world, args, deadline=600)
    failed = [o for o in out if "error" in o]
    if failed:
        raise RuntimeError(failed[0].get("trace", failed[0]["error"]))
    return [o["result"] for o in out]


def main() -> None:
    # one thread a process, for torch and for the C++ backend's OpenMP alike (torchrun's
    # default); with OpenMP's default of every core, two ranks oversubscribe the CPU
    os.environ["OMP_NUM_THREADS"] = "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("BINGO_DATA"), required=False)
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--barrier", action="store_true",
                        help="a barrier before each timed step, so that the time one rank "
                             "waits for a slower one's training step is not counted")
    parser.add_argument("--split", choices=("examples", "variants"), default="examples",
                        help="how the ranks divide a step (TicketSearch's rank_split)")
    parser.add_argument("--global-batch", action="store_true",
                        help="every rank passes the whole global batch (step(..., "
                             "global_batch=True)): nothing gathered")
    args = parser.parse_args()
    for r in range(args.repeats):
        one = measure(args, 1)[0]
        two = measure(args, 2)
        slowest = max(t["median_ms"] for t in two)
        each = " / ".join(f"{t['median_ms']:.2f}" for t in two)
        print(f"repeat {r}: {args.model} global batch {args.batch} K={args.variants} "
              f"split={args.split}{' global' if args.global_batch else ''} "
              f"({one['backend']}): one process {one['median_ms']:.2f} ms, 2 ranks "
              f"{each} ms "
              f"({slowest / one['median_ms']:.2f}x); training step + search step "
              f"{one['loop_ms']:.2f} ms vs {max(t['loop_ms'] for t in two):.2f} ms; kept "
              f"examples {one['kept_mb']:.2f} MiB vs {two[0]['kept_mb']:.2f} MiB a rank",
              flush=True)


if __name__ == "__main__":
    main()
