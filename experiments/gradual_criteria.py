"""Prototype: gradual pruning on the cubic schedule with another per-weight criterion in
place of |w|, or with feedback (DPF: Lin et al. 2020). The same runs (initial weights,
data order) as ``gmp``; ``mag`` through this hook is ``gmp`` (the same masks).

The hook keeps a copy of the prunable weights and puts copy * mask into the model after
every optimizer step, so the forward and the gradient are taken at the pruned weights as
in ``gmp``. The copy's kept entries follow the optimizer; with ``dpf`` the pruned ones
take the step's update too, and each event chooses the masks afresh from the whole copy (a pruned weight the
gradient keeps pushing can return). Criteria (higher = keep):

    mag   |w|                      inc   |w| - |w0| (Zhou et al. 2019's "magnitude increase")
    dist  |w - w0|                 ema   an average of |w| over the last ~50 steps
    look  |w + 20 u|, u an average of the last ~50 steps' updates (where w is heading)
    act   |w| rms(x_j) / the layer's mean rms (Wanda's score; x over the recent batches)
    lamp  w^2 over the sum of w^2 of the layer's kept weights at least as large (Lee et
          al. 2021, LAMP: a layer-adaptive global ranking, each layer's largest scores 1)
    dpf   |w| of the copy, with feedback

    python experiments/gradual_criteria.py --data-dir ../shared/data --criteria mag,inc,dpf \
        --sparsities 0.98,0.99 --seeds 0,1,2 [--optimizer sgd] [--start 0.05 --end 0.5]
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict

import torch

from gradual_candidates import parse_run, run_options

from bingo.engine.targets import select_targets
from bingo.evidence.candidates import lamp_scores
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.schedule import CubicSchedule, lowest_first

CRITERIA = ("mag", "inc", "dist", "ema", "look", "act", "lamp", "dpf")
BETA = 0.98  # the running averages' decay a step (about 50 steps)
AHEAD = 20.0  # steps of the average update ``look`` extrapolates


class Criterion:
    """The after-step hook (module docstring)."""

    def __init__(self, model, criterion: str, schedule: CubicSchedule):
        if criterion not in CRITERIA:
            raise ValueError(f"criterion {criterion!r} is not one of {CRITERIA}")
        self.criterion, self.schedule, self.t = criterion, schedule, 0
        self.names = [t.name for t in select_targets(model)]
        self.params = {n: model.get_parameter(n) for n in self.names}
        self.copy = {n: p.detach().clone() for n, p in self.params.items()}
        self.init = {n: p.detach().clone() for n, p in self.params.items()}
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.copy.items()}
        self.ema = {n: p.abs() for n, p in self.copy.items()}
        self.update = {n: torch.zeros_like(p) for n, p in self.copy.items()}
        self.squares: Dict[str, torch.Tensor] = {}
        self.regrown = 0
        if criterion == "act":
            for n in self.names:
                model.get_submodule(n.rpartition(".")[0]).register_forward_hook(self._rms(n))

    def _rms(self, name):
        def hook(_module, args, _out):
            x = args[0].detach()
            ms = (x * x).mean(0)
            old = self.squares.get(name)
            self.squares[name] = ms if old is None else BETA * old + (1 - BETA) * ms
        return hook

    def scores(self) -> Dict[str, torch.Tensor]:
        c, w = self.criterion, self.copy
        if c in ("mag", "dpf"):
            return {n: w[n].abs() for n in self.names}
        if c == "inc":
            return {n: w[n].abs() - self.init[n].abs() for n in self.names}
        if c == "dist":
            return {n: (w[n] - self.init[n]).abs() for n in self.names}
        if c == "ema":
            return self.ema
        if c == "look":
            return {n: (w[n] + AHEAD * self.update[n]).abs() for n in self.names}
        if c == "lamp":
            return {n: lamp_scores(w[n] * self.masks[n]).float() for n in self.names}
        rms = {n: self.squares[n].sqrt() for n in self.names}
        return {n: w[n].abs() * rms[n] / rms[n].mean() for n in self.names}

    @torch.no_grad()
    def __call__(self, x, y):
        for n in self.names:
            p, m = self.params[n], self.masks[n]
            self.update[n].mul_(BETA).add_((p - self.copy[n]) * m, alpha=1 - BETA)
            # kept entries take the optimizer's result as it is (bit for bit gmp's); with
            # feedback the pruned ones, which were 0 before the step, take its update
            self.copy[n] = torch.where(m, p, self.copy[n] + p if self.criterion == "dpf"
                                       else self.copy[n])
            self.ema[n].mul_(BETA).add_((self.copy[n] * self.masks[n]).abs(), alpha=1 - BETA)
        s = self.schedule.at(self.t)
        self.t += 1
        if s is not None:
            keep = self.masks if self.criterion != "dpf" else {
                n: torch.ones_like(m) for n, m in self.masks.items()}
            new = lowest_first(self.scores(), keep, s)
            self.regrown += sum(int((new[n] & ~self.masks[n]).sum()) for n in self.names)
            self.masks = new
        for n in self.names:
            self.params[n].copy_(self.copy[n] * self.masks[n])


def run(criterion, sparsity, seed, data, optimizer, lr, args):
    torch.manual_seed(seed)
    model = build_model(args.model)
    total = steps_per_epoch(data.train, 64) * args.epochs
    hook = Criterion(model, criterion, CubicSchedule(sparsity, total, args.start, args.end,
                                                     args.every))
    start = time.perf_counter()
    train(model, data.train, epochs=args.epochs, batch_size=64, seed=seed, progress=False,
          optimizer=make_optimizer(optimizer, model.parameters(), lr), after_step=hook)
    zeros = sum(int((p == 0).sum()) for p in hook.params.values())
    return {"criterion": criterion, "sparsity": sparsity, "seed": seed,
            "optimizer": optimizer, "model": args.model, "start": args.start,
            "end": args.end, "every": args.every, "test": accuracy(model, data.test),
            "zeros": zeros / sum(p.numel() for p in hook.params.values()),
            "regrown": hook.regrown, "seconds": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser()
    run_options(ap, "0.98,0.99")
    ap.add_argument("--criteria", default="mag,dpf")
    ap.add_argument("--start", type=float, default=0.1)
    ap.add_argument("--end", type=float, default=0.75)
    ap.add_argument("--every", type=int, default=50)
    args, lr, data = parse_run(ap)
    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            for c in args.criteria.split(","):
                print(json.dumps(run(c, s, seed, data, args.optimizer, lr, args)), flush=True)


if __name__ == "__main__":
    main()
