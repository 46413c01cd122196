"""Prototype: does an OBS-style weight update at each pruning event (the layer-wise
least-squares refit of ``bingo.refit``: the kept weights solved so each layer's outputs on
the kept examples match the network's just before the event) lift `bingo-gradual` above
gradual magnitude pruning? WoodFisher and oBERT's gradual runs update the kept weights
at each event; GMP does not. The same LeNet-300-100 runs (initial weights, data order)
with and without the update; ``--refit-from`` refits only at events from that fraction
of the schedule's events on (the late, large-sparsity ones), to bound its cost.

    python experiments/gradual_refit.py --data-dir ../shared/data --optimizer adam \
        --sparsities 0.98,0.99 --seeds 0,1,2 --modes off,all
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from gradual_candidates import parse_run, run_options

from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.gradual_ticket import GradualTicketPruning
from bingo.pruning.masks import copy_model
from bingo.pruning.refit import refit


class RefitAtEvents(GradualTicketPruning):
    """The default events, then (from the ``refit_from`` share of the events on) the
    refit of every pruned layer against the model as it was before the event, kept only
    where the kept examples' loss falls."""

    def __init__(self, *args, refit_from: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_refit = int(refit_from * len(self.schedule.events()))
        self.refits, self.refit_seconds = [], 0.0

    def _prune_to(self, sparsity: float) -> None:
        index = len(self.events)
        if index < self.first_refit:
            return super()._prune_to(sparsity)
        reference = copy_model(self.model)
        super()._prune_to(sparsity)
        start = time.perf_counter()
        inputs, labels = self.search.calibration_batch()
        report = refit(self.model, reference, inputs, labels=labels)
        self.refit_seconds += time.perf_counter() - start
        self.refits.append(bool(report.kept))


def run(mode, sparsity, seed, data, optimizer, lr, model_name, epochs, calibration, margin):
    torch.manual_seed(seed)
    model = build_model(model_name)
    total = steps_per_epoch(data.train, 64) * epochs
    options = dict(sparsity=sparsity, total_steps=total, seed=seed, calibration=calibration,
                   margin=margin)
    if mode == "off":
        pruner = GradualTicketPruning(model, **options)
    else:
        pruner = RefitAtEvents(model, refit_from={"all": 0.0, "late": 0.5}[mode], **options)
    start = time.perf_counter()
    stats = train(model, data.train, epochs=epochs, batch_size=64, seed=seed, progress=False,
                  optimizer=make_optimizer(optimizer, model.parameters(), lr), after_step=pruner)
    report = pruner.finish()
    return {"mode": mode, "sparsity": sparsity, "seed": seed, "optimizer": optimizer,
            "model": model_name, "zeros": report.sparsity, "test": accuracy(model, data.test),
            "chosen": pruner.chosen, "seconds": time.perf_counter() - start,
            "hook_seconds": stats.hook_seconds, "event_seconds": pruner.event_seconds,
            "refit_seconds": getattr(pruner, "refit_seconds", 0.0),
            "refits_kept": sum(getattr(pruner, "refits", [])),
            "refits": len(getattr(pruner, "refits", []))}


def main() -> None:
    ap = argparse.ArgumentParser()
    run_options(ap, "0.98,0.99", calibration=2048)
    ap.add_argument("--modes", default="off,all", help="off, all, late (the second half "
                    "of the events)")
    ap.add_argument("--margin", type=float, default=0.0,
                    help="the events' margin (0, the rule when this was measured)")
    args, lr, data = parse_run(ap)
    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            for mode in args.modes.split(","):
                print(json.dumps(run(mode, s, seed, data, args.optimizer, lr, args.model,
                                     args.epochs, args.calibration, args.margin)),
                      flush=True)


if __name__ == "__main__":
    main()
