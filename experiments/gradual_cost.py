"""What pruning during training costs: LeNet-300-100 (or ``--model``), Adam, 3 epochs, to
98%, trained plain, with gradual magnitude pruning and with `bingo-gradual`; three runs of
each, interleaved (this VM's speed drifts), medians and the bingo hook's split.

    python experiments/gradual_cost.py --data-dir ../shared/data
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import make_optimizer, steps_per_epoch, train
from bingo.pruning.gradual_ticket import GradualTicketPruning


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="lenet300")
    ap.add_argument("--calibration", type=int, default=None,
                    help="bingo-gradual's kept examples (default: the pruner's)")
    ap.add_argument("--margin", type=float, default=None,
                    help="bingo-gradual's events' margin (default: the pruner's)")
    args = ap.parse_args()
    data = load_dataset("mnist", args.data_dir)
    total = steps_per_epoch(data.train, 64) * 3
    runs = {"plain": [], "gmp": [], "bingo-gradual": []}
    split = {"hook": [], "events": [], "search": []}
    for _ in range(args.repeats):
        for kind in runs:
            torch.manual_seed(0)
            model = build_model(args.model)
            hook = None
            if kind == "gmp":
                hook = GradualMagnitudePruning(model, sparsity=0.98, total_steps=total)
            elif kind == "bingo-gradual":
                extra = {k: v for k, v in (("calibration", args.calibration),
                                           ("margin", args.margin)) if v is not None}
                hook = GradualTicketPruning(model, sparsity=0.98, total_steps=total, **extra)
            stats = train(model, data.train, epochs=3, batch_size=64, after_step=hook,
                          optimizer=make_optimizer("adam", model.parameters(), 1e-3),
                          progress=False)
            runs[kind].append(stats.seconds)
            if kind == "bingo-gradual":
                split["hook"].append(stats.hook_seconds)
                split["events"].append(hook.event_seconds)
                split["search"].append(hook.search.search_seconds)
    median = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({"median_seconds": median,
                      "ratio_to_plain": {k: v / median["plain"] for k, v in median.items()},
                      "bingo_split_median": {k: statistics.median(v) for k, v in split.items()},
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
