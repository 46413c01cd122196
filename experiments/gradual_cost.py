"""What pruning during training costs: LeNet-300-100 (or ``--model``), Adam, 3 epochs, to
98%, trained plain, with gradual magnitude pruning and with `bingo-gradual`; three runs of
each, interleaved (this VM's speed drifts), medians and the bingo hook's split. With
``--candidates`` each comma list of event candidates is a `bingo-gradual` row of its own
(``bingo-gradual[magnitude,lamp]``), in the same rounds.

    python experiments/gradual_cost.py --data-dir ../shared/data
    python experiments/gradual_cost.py --data-dir ../shared/data --repeats 5 \
        --candidates magnitude,lamp magnitude,mag+movement,lamp
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
    ap.add_argument("--candidates", nargs="+", default=None,
                    help="comma lists of the events' candidates, each a row of its own "
                         "(default: one row with the pruner's)")
    args = ap.parse_args()
    data = load_dataset("mnist", args.data_dir)
    total = steps_per_epoch(data.train, 64) * 3
    sets = {"bingo-gradual": None} if not args.candidates else {
        f"bingo-gradual[{c}]": tuple(c.split(",")) for c in args.candidates}
    runs = {"plain": [], "gmp": [], **{k: [] for k in sets}}
    split = {k: {"hook": [], "events": [], "search": []} for k in sets}
    for _ in range(args.repeats):
        for kind in runs:
            torch.manual_seed(0)
            model = build_model(args.model)
            hook = None
            if kind == "gmp":
                hook = GradualMagnitudePruning(model, sparsity=0.98, total_steps=total)
            elif kind in sets:
                extra = {k: v for k, v in (("calibration", args.calibration),
                                           ("margin", args.margin),
                                           ("candidates", sets[kind])) if v is not None}
                hook = GradualTicketPruning(model, sparsity=0.98, total_steps=total, **extra)
            stats = train(model, data.train, epochs=3, batch_size=64, after_step=hook,
                          optimizer=make_optimizer("adam", model.parameters(), 1e-3),
                          progress=False)
            runs[kind].append(stats.seconds)
            if kind in sets:
                split[kind]["hook"].append(stats.hook_seconds)
                split[kind]["events"].append(hook.event_seconds)
                split[kind]["search"].append(hook.search.search_seconds)
    median = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({"median_seconds": median,
                      "ratio_to_plain": {k: v / median["plain"] for k, v in median.items()},
                      # each round's run over the same round's plain run (the VM's
                      # speed drifts; within a round it drifts less often)
                      "round_ratio_median": {
                          k: statistics.median(a / b for a, b in zip(v, runs["plain"]))
                          for k, v in runs.items()},
                      "bingo_split_median": {
                          kind: {k: statistics.median(v) for k, v in parts.items()}
                          for kind, parts in split.items()},
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
