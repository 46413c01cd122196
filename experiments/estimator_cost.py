"""What the calibrated estimator's cost buys on a model beyond four targets (issue 22):
one default training run of ``--model`` (its recipe), then the estimator at ``--sparsity``
with its many-target knobs varied one at a time (swaps, candidates balanced, finest step)
and with fewer kept examples (the first N of the kept ones), each scored by the pruned
model's held-out figure (validation loss for text, validation accuracy for images).

    python experiments/estimator_cost.py --data-dir ../shared/data --model char-gpt \
        --dataset tinyshakespeare --sparsity 0.5[,0.7,...] [--variants default,cheap] \
        [--calibration 256]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bingo.evidence import calibrated
from bingo.harness.data import load_dataset
from bingo.harness.prune_job import PruneJob
from bingo.harness.models import build_model
from bingo.harness.training import evaluate
from bingo.pruning.masks import copy_model, prune

VARIANTS = [("default", {}, None), ("swaps 5", {"MANY_SWAPS": 5}, None),
            ("no swaps", {"MANY_SWAPS": 0}, None), ("screen 1", {"SCREEN": 1}, None),
            ("finest 1/40", {"MANY_FINEST": 40}, None), ("kept 128", {}, 128),
            ("kept 64", {}, 64),
            ("cheap", {"SCREEN": 1, "MANY_FINEST": 40, "MANY_SWAPS": 5}, None)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="char-gpt")
    p.add_argument("--dataset", default="tinyshakespeare")
    p.add_argument("--sparsity", default="0.5", help="one or more, comma-separated")
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                   help="which rows, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", type=int, default=None,
                   help="kept examples of the search (default: the model's; char-gpt 64 "
                        "since 2026-12-06, the tables before it ran 256)")
    args = p.parse_args()
    sparsities = [float(x) for x in args.sparsity.split(",")]
    chosen = args.variants.split(",")
    unknown = set(chosen) - {v[0] for v in VARIANTS}
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {[v[0] for v in VARIANTS]}")
    job = PruneJob(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                   sparsity=sparsities[0], seed=args.seed, calibration=args.calibration)
    data = load_dataset(job.dataset, job.data_dir)
    torch.manual_seed(job.seed)
    model = build_model(job.model)
    search = job.make_search(model)
    stats = job.fit(model, data.train, after_step=search.step, progress=False)
    metric = job.metric_name
    print(json.dumps({"train_seconds": stats.seconds, "dense": evaluate(model, data.val, metric)}))
    kept = search.calibration_batch()
    for (name, knobs, examples), sparsity in ((v, s) for s in sparsities for v in VARIANTS
                                              if v[0] in chosen):
        saved = {k: getattr(calibrated, k) for k in knobs}
        for k, v in knobs.items():
            setattr(calibrated, k, v)
        original = search.calibration_batch
        if examples is not None:  # the first N kept examples, for this variant only
            search.calibration_batch = lambda n=examples: (kept[0][:n], kept[1][:n])
        start = time.perf_counter()
        scores = search.significance("calibrated", sparsity=sparsity)
        seconds = time.perf_counter() - start
        search.calibration_batch = original
        for k, v in saved.items():
            setattr(calibrated, k, v)
        pruned = copy_model(model)
        prune(pruned, scores, sparsity=sparsity)
        c = search.last_calibration
        print(json.dumps({"variant": name, "sparsity": sparsity, "seed": args.seed,
                          "seconds": round(seconds, 1), "evaluations": c.evaluations,
                          "chosen": c.chosen,
                          metric: evaluate(pruned, data.val, metric)}), flush=True)


if __name__ == "__main__":
    main()
