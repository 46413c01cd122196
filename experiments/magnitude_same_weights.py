"""One-shot magnitude pruning of the weights the default `bingo prune` run trains.

A search changes neither the weights nor the RNG, so training the default job
without it gives bit-identical weights: this prunes those by |w| to the same
validation floor, for a like-for-like comparison with BINGO's scores.

    python experiments/magnitude_same_weights.py --data-dir ../shared/data
"""
import argparse

import torch

import bingo
from bingo.harness.data import load_dataset
from bingo.harness.prune_job import DEFAULT_MIN_ACCURACY, PruneJob
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY)
    args = parser.parse_args()
    job = PruneJob(data_dir=args.data_dir)
    data = load_dataset(job.dataset, job.data_dir)
    torch.manual_seed(job.seed)
    model = build_model(job.model)
    optimizer = make_optimizer(job.optimizer, model.parameters(), job.lr)
    train(model, data.train, epochs=job.epochs, batch_size=job.batch_size, optimizer=optimizer,
          seed=job.seed)
    dense = accuracy(model, data.test)
    scores = {f"{n}.weight": m.weight.detach().abs() for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear)}
    report = bingo.prune(model, scores, min_accuracy=args.min_accuracy,
                         evaluate=lambda m: accuracy(m, data.val))
    print(f"magnitude: sparsity {report.sparsity:.4f}; test {dense:.4f} -> "
          f"{accuracy(model, data.test):.4f}; val {report.accuracy_before:.4f} -> "
          f"{report.accuracy_after:.4f}")


if __name__ == "__main__":
    main()
