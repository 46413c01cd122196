"""Ways to spend issue 5's one fine-tune epoch after one-shot pruning at 95% (a
measurement behind docs/results.md, *One fine-tune epoch against IMP*; none is adopted).

For each seed: one training run with the default search (as `bingo compare` trains it:
same initial weights, data order and optimizer), pruned one-shot by the calibrated
estimator, then one epoch of fine-tuning (batch 64, the run's data order) per variant:

* ``plain``: what `bingo compare --finetune-epochs 1 --finetune-ramp 0` does (Adam at the
  training rate);
* ``lr x2``, ``lr x0.5``: the rate doubled or halved;
* ``warmup``: the rate ramped up linearly over the first 10% of the epoch, then held;
  ``warmup+decay``: then decayed linearly to zero;
* ``distill T``: the loss half cross-entropy, half T²·KL from the dense network's
  outputs softened by T (knowledge distillation from the unpruned model);
* ``refit``: the kept weights first refit by least squares
  (``refit_after_pruning.refit``), then the plain epoch; ``refit, lr x0.5``.

Prints one Markdown row per seed: test accuracy (%) after each variant.

    python experiments/finetune_variants.py --data-dir ../shared/data --seeds 0,1,2,3
"""
from __future__ import annotations

import argparse
import copy
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from refit_after_pruning import refit, searched_run
from torch import nn

from bingo.harness.data import Split, batches
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch
from bingo.pruning.masks import prune

Schedule = Callable[[float], float]  # fraction of the epoch done -> factor on the rate
CONSTANT: Schedule = lambda f: 1.0  # noqa: E731


def finetune(model: nn.Module, split: Split, *, optimizer: str, lr: float, seed: int,
             schedule: Schedule = CONSTANT, teacher: Optional[nn.Module] = None,
             temperature: float = 1.0) -> None:
    """One epoch in ``bingo.harness.training.train``'s data order, with a rate schedule and an
    optional distillation term (the one thing ``train`` does not offer)."""
    opt = make_optimizer(optimizer, model.parameters(), lr)
    steps = steps_per_epoch(split, 64)
    model.train()
    for i, (x, y) in enumerate(batches(split, 64, torch.Generator().manual_seed(seed))):
        opt.param_groups[0]["lr"] = lr * schedule(i / steps)
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        if teacher is not None:
            with torch.no_grad():
                soft = F.log_softmax(teacher(x) / temperature, -1)
            kl = F.kl_div(F.log_softmax(out / temperature, -1), soft, log_target=True,
                          reduction="batchmean")
            loss = 0.5 * loss + 0.5 * temperature ** 2 * kl
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sparsity", type=float, default=0.95)
    args = parser.parse_args()
    warm: Schedule = lambda f: min(1.0, f / 0.1)  # noqa: E731
    warm_decay: Schedule = lambda f: min(f / 0.1, (1.0 - f) / 0.9)  # noqa: E731
    variants: Dict[str, dict] = {
        "plain": {}, "lr x2": {"lr": 2 * args.lr}, "lr x0.5": {"lr": 0.5 * args.lr},
        "warmup": {"schedule": warm}, "warmup+decay": {"schedule": warm_decay},
        "distill 2": {"distill": 2.0}, "distill 4": {"distill": 4.0},
        "refit": {"refit": True}, "refit, lr x0.5": {"refit": True, "lr": 0.5 * args.lr}}
    print("| seed | dense | one-shot | " + " | ".join(variants) + " |")
    print("|---:" * (len(variants) + 3) + "|")
    data = None
    for seed in (int(s) for s in args.seeds.split(",")):
        data, dense, search = searched_run(args, seed, data)
        pruned = copy.deepcopy(dense)
        prune(pruned, search.significance("calibrated", sparsity=args.sparsity),
              sparsity=args.sparsity)
        row = [f"{seed}", f"{100 * accuracy(dense, data.test):.2f}",
               f"{100 * accuracy(pruned, data.test):.2f}"]
        for v in variants.values():
            m = copy.deepcopy(pruned)
            if v.get("refit"):
                refit(dense, m, search.calibration_batch()[0], 1e-3)
            finetune(m, data.train, optimizer=args.optimizer, lr=v.get("lr", args.lr),
                     seed=seed, schedule=v.get("schedule", CONSTANT),
                     teacher=dense if "distill" in v else None,
                     temperature=v.get("distill", 1.0))
            row.append(f"{100 * accuracy(m, data.test):.2f}")
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
