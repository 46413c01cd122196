"""How much can a better mask give at this training budget? One ``gmp`` run per cell;
then its final mask, held fixed from the first step, trained from the same initial
weights on the same data order (``fixed``: a ticket trained from init, no rewinding);
then the same total with one layer's budget scaled (``--shifts layer:factor``, the other
layers giving or taking the difference in proportion to their counts; weights added by
the largest |weight_orig| among the pruned, i.e. the latest pruned, removed by the lowest
|w| among the kept), each trained the same way.

    python experiments/gradual_leverage.py --data-dir ../shared/data --sparsities 0.98,0.99 \
        --seeds 0,1,2 [--optimizer sgd] [--model convnet --shifts fc2.weight:1.5,...]
"""
from __future__ import annotations

import argparse
import json
from typing import Dict

import torch

from gradual_candidates import parse_run, run_options

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train

Masks = Dict[str, torch.Tensor]
LENET_SHIFTS = ("fc1.weight:0.9,fc1.weight:1.1,fc2.weight:0.7,fc2.weight:1.3,"
                "fc3.weight:0.6,fc3.weight:1.5")


class Fixed:
    """After-step hook holding ``masks`` fixed: the masked weights are zeroed from the
    start and after every optimizer step."""

    def __init__(self, model, masks: Masks):
        self.params = {n: model.get_parameter(n) for n in masks}
        self.masks = masks
        self()

    @torch.no_grad()
    def __call__(self, *_batch):
        for n, m in self.masks.items():
            self.params[n].mul_(m)


def shifted(keep: Masks, orig: Masks, layer: str, factor: float) -> Masks:
    """``keep`` with ``layer``'s count scaled by ``factor`` at the same total (module
    docstring)."""
    count = {n: int(k.sum()) for n, k in keep.items()}
    want = {layer: min(round(count[layer] * factor), keep[layer].numel())}
    rest = sum(c for n, c in count.items() if n != layer)
    for n in keep:
        if n != layer:
            want[n] = count[n] - round((want[layer] - count[layer]) * count[n] / rest)
    out = {}
    for n, k in keep.items():
        rank = orig[n].abs().reshape(-1) + 1e3 * k.reshape(-1).float()  # kept ones first
        flat = torch.zeros(k.numel(), dtype=torch.bool)
        flat[torch.topk(rank, want[n]).indices] = True
        out[n] = flat.view_as(k)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    run_options(ap, "0.98,0.99")
    ap.add_argument("--shifts", default=LENET_SHIFTS)
    args, lr, data = parse_run(ap)
    total = steps_per_epoch(data.train, 64) * args.epochs

    def trained(seed, hook_for):
        torch.manual_seed(seed)
        model = build_model(args.model)
        hook = hook_for(model)
        train(model, data.train, epochs=args.epochs, batch_size=64, seed=seed,
              progress=False, optimizer=make_optimizer(args.optimizer, model.parameters(), lr),
              after_step=hook)
        return model, hook

    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            model, gmp = trained(seed, lambda m: GradualMagnitudePruning(
                m, sparsity=s, total_steps=total))
            gmp.finish()
            keep = gmp.keep()
            orig = {n: model.get_submodule(n.rpartition(".")[0]).weight_orig.detach()
                    for n in keep}
            row = {"model": args.model, "optimizer": args.optimizer, "sparsity": s,
                   "seed": seed, "counts": {n: int(k.sum()) for n, k in keep.items()},
                   "gmp": accuracy(model, data.test)}
            row["fixed"] = accuracy(trained(seed, lambda m: Fixed(m, keep))[0], data.test)
            for shift in args.shifts.split(","):
                layer, factor = shift.split(":")
                masks = shifted(keep, orig, layer, float(factor))
                row[shift] = accuracy(trained(seed, lambda m: Fixed(m, masks))[0], data.test)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
