"""Is bingo's gradual magnitude baseline a straw man? The same runs through torch.ao.pruning.

``gmp-layer`` (bingo.harness.baselines.gmp, scope="layer") against torch.ao.pruning's
``WeightNormSparsifier`` (block shape (1, 1): single weights, each layer to the same level)
driven by ``CubicSL`` on the same schedule (first event at 10% of the steps, last at 75%,
one every 50 steps), on the same LeNet-300-100 runs (initial weights, data order, Adam):
test accuracy per seed and sparsity.

    python experiments/gmp_crosscheck.py --data-dir ../shared/data --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import warnings

import torch
from torch.ao.pruning import CubicSL, WeightNormSparsifier

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.schedule import CubicSchedule

LAYERS = ("fc1", "fc2", "fc3")


class TorchAO:
    """torch.ao.pruning's cubic schedule as an after-step hook on the same events."""

    def __init__(self, model, schedule: CubicSchedule):
        self.schedule, self.t = schedule, 0
        self.sparsifier = WeightNormSparsifier(sparsity_level=schedule.sparsity,
                                               sparse_block_shape=(1, 1), zeros_per_block=1)
        self.sparsifier.prepare(model, [{"tensor_fqn": f"{n}.weight"} for n in LAYERS])
        events = len(schedule.events()) - 1  # intervals between the first and last event
        self.scheduler = CubicSL(self.sparsifier, init_sl=0.0, init_t=schedule.first,
                                 delta_t=schedule.every, total_t=events, initially_zero=True)

    def __call__(self, x, y):
        if self.schedule.at(self.t) is not None:
            self.scheduler.last_epoch = self.t - 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.scheduler.step()  # sets each group's level for step t
            self.sparsifier.step()     # and prunes to it
        self.t += 1

    def finish(self):
        self.sparsifier.squash_mask()


def run(kind: str, sparsity: float, seed: int, data, epochs: int = 3) -> dict:
    torch.manual_seed(seed)
    model = build_model("lenet300")
    total = steps_per_epoch(data.train, 64) * epochs
    schedule = CubicSchedule(sparsity, total)
    hook = (GradualMagnitudePruning(model, sparsity=sparsity, total_steps=total, scope="layer")
            if kind == "bingo gmp-layer" else TorchAO(model, schedule))
    train(model, data.train, epochs=epochs, batch_size=64, seed=seed, after_step=hook,
          optimizer=make_optimizer("adam", model.parameters(), 1e-3), progress=False)
    hook.finish()
    weights = [model.get_submodule(n).weight for n in LAYERS]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    return {"kind": kind, "sparsity": sparsity, "seed": seed, "zeros": zeros,
            "test": accuracy(model, data.test)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sparsities", default="0.9,0.95,0.98")
    args = ap.parse_args()
    data = load_dataset("mnist", args.data_dir)
    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            for kind in ("bingo gmp-layer", "torch.ao CubicSL"):
                print(json.dumps(run(kind, s, seed, data)), flush=True)


if __name__ == "__main__":
    main()
