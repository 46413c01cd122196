"""Prototype (issue 21): targeted ticket searches during the gradual schedule.

Between two events, every ``probe_every``-th training step measures, on that step's own
training batch, the loss of each candidate *next* cut (the next event's sparsity): global
magnitude (the reference, gradual magnitude pruning's own choice), global mag+movement, and
for each layer the magnitude cut with that layer giving ``shift`` of the event's new
removals more (the others less, in proportion to their share). The paired per-example
losses are kept for every probed batch since the last event (thousands of examples, not
the 512 kept ones), and the event installs the rule whose per-example losses are lower
than magnitude's by ``margin`` standard errors of the paired difference (the events' own
test; the lowest mean such), applied to the weights at the event. The proposals are recomputed every ``refresh`` probes.

    python experiments/gradual_targeted.py --data-dir ../shared/data --optimizer adam \
        --sparsities 0.98,0.99 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Dict, Optional

import torch

from bingo.evidence.candidates import lowest
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.gradual_ticket import GradualTicketPruning
from bingo.pruning.schedule import Masks, lowest_first

from gradual_candidates import parse_run, run_options


class TargetedGradual(GradualTicketPruning):
    def __init__(self, model, *, shift: float = 0.2, refresh: int = 10, probe_every: int = 1,
                 layer_shifts: bool = True, **options):
        super().__init__(model, candidates=("magnitude", "mag+movement"), **options)
        self.rules = ["magnitude", "mag+movement"] + (
            [f"shift:{n}" for n in self.names] if layer_shifts else [])
        self.shift, self.refresh, self.probe_every = shift, refresh, probe_every
        self.events_at = self.schedule.events()
        self.won = {r: 0 for r in self.rules}
        self.probe_seconds = 0.0
        self._reset()

    def _reset(self):
        self.each = {r: [] for r in self.rules}  # per-example losses of every probed batch
        self.proposals: Optional[Dict[str, Masks]] = None
        self.since = 0

    def _next_event(self) -> Optional[float]:
        later = [t for t in self.events_at if t >= self.step_count]
        return self.schedule.at(later[0]) if later else None

    def _probed(self, rule: str) -> torch.Tensor:
        return torch.cat(self.each[rule])

    def step(self, inputs, targets):
        s = super().step(inputs, targets)
        goal = self._next_event()
        if goal is not None and self.step_count % self.probe_every == 0:
            start = time.perf_counter()
            self._probe(goal, inputs, targets)
            self.probe_seconds += time.perf_counter() - start
        return s

    __call__ = step

    @torch.no_grad()
    def _probe(self, goal, inputs, targets):
        if self.proposals is None or self.since >= self.refresh:
            self.proposals = {r: self._propose(r, goal) for r in self.rules}
            self.since = 0
        self.since += 1
        for r, keep in self.proposals.items():
            self.each[r].append(self._per_example(self.masked_forward(keep, inputs), targets))

    def _propose(self, rule: str, sparsity: float) -> Masks:
        keep = self.keep()
        names = list(keep)
        flat_keep = torch.cat([keep[n].reshape(-1) for n in names])
        kept = flat_keep.nonzero().squeeze(1)
        sizes = [keep[n].numel() for n in names]
        goal = round(sparsity * flat_keep.numel())
        more = goal - (flat_keep.numel() - kept.numel())
        if more <= 0:
            return keep
        rankings, _ = self._rankings(keep, kept)
        base = "mag+movement" if rule == "mag+movement" else "magnitude"
        flat = flat_keep.clone()
        flat[kept[lowest(rankings[base], more)]] = False
        proposal = {n: p.view(keep[n].shape) for n, p in zip(names, torch.split(flat, sizes))}
        if not rule.startswith("shift:"):
            return proposal
        # move shift * (this event's removals) onto the named layer, from the others
        target = rule.split(":", 1)[1]
        now = {n: int((~keep[n]).sum()) for n in names}
        cut = {n: int((~proposal[n]).sum()) - now[n] for n in names}
        delta = min(max(1, round(self.shift * more)), int(keep[target].sum()) - cut[target] - 1)
        others = sum(cut[n] for n in names if n != target)
        if delta <= 0 or others <= 0:
            return proposal
        delta = min(delta, others)
        counts = dict(cut)
        counts[target] += delta
        taken = 0
        rest = [n for n in names if n != target and cut[n] > 0]
        for i, n in enumerate(rest):
            give = delta - taken if i == len(rest) - 1 else round(delta * cut[n] / others)
            give = min(give, cut[n])
            counts[n] -= give
            taken += give
        counts[target] -= delta - taken  # what the others could not give
        budgets = {n: (now[n] + counts[n]) / keep[n].numel() for n in names}
        magnitude = {n: w.abs() for n, w in self.weights().items()}
        return lowest_first(magnitude, keep, budgets)

    def choose(self, sparsity: float) -> Masks:
        best, n = "magnitude", sum(len(e) for e in self.each["magnitude"])
        if n > 1:
            reference = self._probed("magnitude")
            passing = [(float((self._probed(r) - reference).mean()), r) for r in self.rules[1:]
                       if self._clearly_lower(self._probed(r), reference)]
            if passing:
                best = min(passing)[1]
        self.won[best] += 1
        self._last = {"chosen": best, "probed": n}
        masks = self._propose(best, sparsity)
        self._reset()
        return masks


def run(sparsity, seed, data, optimizer, lr, model_name, epochs, calibration, margin, shift,
        probe_every, layer_shifts):
    torch.manual_seed(seed)
    model = build_model(model_name)
    total = steps_per_epoch(data.train, 64) * epochs
    pruner = TargetedGradual(model, sparsity=sparsity, total_steps=total, seed=seed,
                             calibration=calibration, margin=margin, shift=shift,
                             probe_every=probe_every, layer_shifts=layer_shifts)
    start = time.perf_counter()
    stats = train(model, data.train, epochs=epochs, batch_size=64, seed=seed, progress=False,
                  optimizer=make_optimizer(optimizer, model.parameters(), lr), after_step=pruner)
    report = pruner.finish()
    return {"rule": "targeted", "sparsity": sparsity, "seed": seed, "optimizer": optimizer,
            "model": model_name, "margin": margin, "shift": shift, "layer_shifts": layer_shifts,
            "probe_every": probe_every, "zeros": report.sparsity,
            "test": accuracy(model, data.test), "won": pruner.won,
            "seconds": time.perf_counter() - start, "hook_seconds": stats.hook_seconds,
            "probe_seconds": pruner.probe_seconds, "event_seconds": pruner.event_seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    run_options(ap, "0.98,0.99")
    ap.add_argument("--margin", type=float, default=2.0)
    ap.add_argument("--shift", type=float, default=0.2)
    ap.add_argument("--probe-every", type=int, default=1)
    ap.add_argument("--no-layer-shifts", action="store_true")
    args, lr, data = parse_run(ap)
    for seed in map(int, args.seeds.split(",")):
        for s in map(float, args.sparsities.split(",")):
            print(json.dumps(run(s, seed, data, args.optimizer, lr, args.model, args.epochs,
                                 args.calibration, args.margin, args.shift, args.probe_every,
                                 not args.no_layer_shifts)), flush=True)


if __name__ == "__main__":
    main()
