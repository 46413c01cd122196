"""What a least-squares refit of the kept weights (``bingo.refit``) adds to one-shot
pruning: the measurement behind docs/results.md, *LeNet-SGD*.

For each seed: one training run with the default search (K = 0, as `bingo compare`
trains it: same data order and initial weights), its weights pruned one-shot by the calibrated estimator and by magnitude at
each sparsity, then refit by ``bingo.refit`` on the search's kept examples (ridge
``--ridge``). No gradient step; the masks do not change. Prints one Markdown row per
(seed, sparsity) with the test accuracies one-shot and refit.

    python experiments/refit_after_pruning.py --data-dir ../shared/data --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import copy

import torch

from bingo.harness.compare import CompareJob
from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, train
from bingo.pruning.masks import prune
from bingo.pruning.refit import refit


def searched_run(args: argparse.Namespace, seed: int, data=None) -> tuple:
    """(data, trained model, its search): one training run with the default search, as
    `bingo compare` trains it (same data order and initial weights), for ``args.model``,
    ``args.optimizer``, ``args.lr`` and ``args.data_dir``; ``data`` reused when given."""
    job = CompareJob(model=args.model, data_dir=args.data_dir, optimizer=args.optimizer,
                     lr=args.lr, methods=["bingo:calibrated"], seed=seed)
    data = data or load_dataset(job.dataset, job.data_dir)
    torch.manual_seed(seed)
    model = build_model(job.model)
    search = job.make_search(model, ["calibrated"])
    train(model, data.train, epochs=job.epochs, batch_size=job.batch_size,
          optimizer=make_optimizer(job.optimizer, model.parameters(), job.lr), seed=seed,
          after_step=search.step, progress=False)
    return data, model, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--sparsities", default="0.9,0.95")
    parser.add_argument("--ridge", type=float, default=1e-3)
    args = parser.parse_args()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    print("| seed | sparsity | dense | calibrated: one-shot | refit | magnitude: one-shot | refit |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    data = None
    for seed in (int(s) for s in args.seeds.split(",")):
        data, model, search = searched_run(args, seed, data)
        x, _ = search.calibration_batch()
        dense = 100 * accuracy(model, data.test)
        for s in sparsities:
            row = [f"{seed}", f"{s:.0%}", f"{dense:.2f}"]
            for estimator in ("calibrated", "magnitude"):
                pruned = copy.deepcopy(model)
                prune(pruned, search.significance(estimator, sparsity=s), sparsity=s)
                row.append(f"{100 * accuracy(pruned, data.test):.2f}")
                refit(pruned, model, x, ridge=args.ridge)
                row.append(f"{100 * accuracy(pruned, data.test):.2f}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
