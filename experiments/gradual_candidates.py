"""Which candidate rankings should `bingo-gradual`'s events choose between? The same
LeNet-300-100 runs (initial weights, data order) pruned during training with each set.
``magnitude`` alone is gradual magnitude pruning (global) through the same code.
``--margin`` sets the standard errors by which another candidate must beat the first
(magnitude) before an event takes its mask (a comma list: each value its own run; 0, the
lowest mean loss, was the default before 2026-12-06; now 2), ``--calibration`` the kept
examples they measure on (2048 before 2026-12-06; now 512).

    python experiments/gradual_candidates.py --data-dir ../shared/data --optimizer sgd \
        --sets magnitude mag+movement,magnitude magnitude,mag+movement,mag+fisher \
        --sparsities 0.95,0.98 --seeds 0,1,2 --margin 0,2
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.gradual_ticket import (DEFAULT_EVENT_EXAMPLES, DEFAULT_MARGIN,
                                         GradualTicketPruning)


def run(candidates, sparsity, seed, data, optimizer, lr, model_name, epochs, calibration,
        free_dead=False, margin=DEFAULT_MARGIN):
    torch.manual_seed(seed)
    model = build_model(model_name)
    total = steps_per_epoch(data.train, 64) * epochs
    pruner = GradualTicketPruning(model, sparsity=sparsity, total_steps=total, seed=seed,
                                  candidates=candidates, calibration=calibration,
                                  free_dead=free_dead, margin=margin)
    start = time.perf_counter()
    stats = train(model, data.train, epochs=epochs, batch_size=64, seed=seed, progress=False,
                  optimizer=make_optimizer(optimizer, model.parameters(), lr), after_step=pruner)
    report = pruner.finish()
    return {"candidates": ",".join(candidates), "sparsity": sparsity, "seed": seed,
            "optimizer": optimizer, "free_dead": free_dead, "model": model_name,
            "margin": margin, "vetoed": pruner.vetoed,
            "zeros": report.sparsity, "free": [e.get("free") for e in pruner.events],
            "test": accuracy(model, data.test), "val": accuracy(model, data.val),
            "chosen": pruner.chosen,
            "seconds": time.perf_counter() - start, "hook_seconds": stats.hook_seconds,
            "event_seconds": pruner.event_seconds}


def run_options(ap: argparse.ArgumentParser, sparsities: str,
                calibration: int = DEFAULT_EVENT_EXAMPLES) -> None:
    """The options every gradual LeNet experiment takes (also gradual_refit.py's)."""
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--sparsities", default=sparsities)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--model", default="lenet300")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=calibration,
                    help="kept examples the events measure on (2048 before 2026-12-06)")


def parse_run(ap: argparse.ArgumentParser):
    """The parsed options, the optimizer's learning rate (Adam 1e-3, SGD 0.05) and MNIST."""
    args = ap.parse_args()
    return args, 1e-3 if args.optimizer == "adam" else 0.05, load_dataset("mnist", args.data_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    run_options(ap, "0.95,0.98")
    ap.add_argument("--sets", nargs="+", default=["magnitude", "magnitude,mag+movement,mag+fisher"])
    ap.add_argument("--free-dead", default="0", help="comma list of 0/1: weights whose "
                    "input is zero on every kept example pruned first, for free")
    ap.add_argument("--margin", default=str(DEFAULT_MARGIN),
                    help="comma list of the events' margins, in standard errors")
    args, lr, data = parse_run(ap)
    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            for c in args.sets:
                for free in map(int, args.free_dead.split(",")):
                    for z in map(float, args.margin.split(",")):
                        print(json.dumps(run(tuple(c.split(",")), s, seed, data,
                                             args.optimizer, lr, args.model, args.epochs,
                                             args.calibration, bool(free), z)), flush=True)


if __name__ == "__main__":
    main()
