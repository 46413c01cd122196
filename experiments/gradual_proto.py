"""Prototype: which event rule beats gradual magnitude pruning inside one LeNet run.

python experiments/gradual_proto.py --data-dir ../shared/data --rules gmp,gmp-layer,... \
    --sparsities 0.98 --seeds 0
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from bingo.engine.search import TicketSearch
from bingo.engine.targets import select_targets
from bingo.harness.data import load_dataset
from bingo.harness.models import build_model
from bingo.harness.training import accuracy, make_optimizer, steps_per_epoch, train
from bingo.pruning.schedule import CubicSchedule, lowest_first


def cubic(step, total, s, every=50):
    return CubicSchedule(s, total, every=every).at(step)


def keep_top(scores, masks, s, scope="global", budgets=None):
    """New keep masks: prune to s the lowest scores, pruned ones first."""
    return lowest_first(scores, masks, budgets if budgets is not None else s, scope)


class Proto:
    def __init__(self, model, rule, sparsity, total, every=50, calib=1024, seed=0):
        self.model, self.rule, self.S, self.total, self.every = model, rule, sparsity, total, every
        self.names = [t.name for t in select_targets(model)]
        self.params = dict(model.named_parameters())
        self.masks = {n: torch.ones_like(self.params[n], dtype=torch.bool) for n in self.names}
        self.search = TicketSearch(model, variants=0, calibration=calib, seed=seed)
        self.t = 0
        self.event_seconds = 0.0
        self.gsq = {n: torch.zeros_like(self.params[n]) for n in self.names}  # EMA of g^2 (dense)

    @torch.no_grad()
    def zero(self):
        for n in self.names:
            self.params[n].mul_(self.masks[n])

    def __call__(self, x, y):
        self.zero()
        if "rigl" in self.rule:
            for n in self.names:
                g = self.params[n].grad
                self.gsq[n].mul_(0.9).add_(g.abs(), alpha=0.1)
        self.search.step(x, y)
        s = cubic(self.t, self.total, self.S, every=self.every)
        self.t += 1
        if s is not None and s > 0:
            t = time.perf_counter()
            self.event(s)
            self.zero()
            self.event_seconds += time.perf_counter() - t

    def loss(self, masks):
        xs, ys = self.search.calibration_batch()
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = functional_call(self.model, {n: self.params[n] * masks[n] for n in self.names}, (xs,))
        self.model.train(was)
        return float(F.cross_entropy(out, ys))

    def mag(self):
        return {n: self.params[n].detach().abs() for n in self.names}

    def event(self, s):
        r = self.rule
        if r == "gmp":
            self.masks = keep_top(self.mag(), self.masks, s)
        elif r == "gmp-layer":
            self.masks = keep_top(self.mag(), self.masks, s, "layer")
        elif r.startswith("choose"):
            cands = {"global": keep_top(self.mag(), self.masks, s),
                     "layer": keep_top(self.mag(), self.masks, s, "layer")}
            if "mix" in r:
                from bingo.evidence.candidates import candidate_scores
                cs = candidate_scores(self.search, ["mag+movement", "mag+fisher"])
                for k, v in cs.items():
                    cands[k] = keep_top(v, self.masks, s)
            losses = {k: self.loss(m) for k, m in cands.items()}
            best = min(losses, key=losses.get)
            self.masks = cands[best]
        elif r.startswith("balance"):
            self.masks = self.balance(s)
        elif r.startswith("rigl"):
            new = keep_top(self.mag(), self.masks, s)
            # regrow: swap k lowest kept for k largest-gradient pruned, k = 10% of the kept
            frac = 0.1 * (1 - self.t / self.total)
            for n in self.names:
                keep = new[n].reshape(-1)
                k = int(frac * int(keep.sum()))
                if k == 0:
                    continue
                w = self.params[n].detach().abs().reshape(-1)
                g = self.gsq[n].reshape(-1)
                grow = torch.topk(torch.where(keep, -torch.inf, g), k).indices
                drop = torch.topk(torch.where(keep, -w, -torch.inf), k).indices
                keep = keep.clone(); keep[drop] = False; keep[grow] = True
                new[n] = keep.view_as(new[n])
            self.masks = new
        else:
            raise ValueError(r)

    def balance(self, s):
        """Global-magnitude split, then measured moves of budget between layers."""
        mag = self.mag()
        base = keep_top(mag, self.masks, s)
        n_all = sum(m.numel() for m in base.values())
        pruned = {n: int((~base[n]).sum()) for n in self.names}
        cur = {n: int((~self.masks[n]).sum()) for n in self.names}
        best, best_loss = dict(pruned), self.loss(base)
        step = max(1, int(0.02 * (n_all - sum(pruned.values()))))  # 2% of kept
        for _ in range(3):
            improved = False
            for a in self.names:
                for b in self.names:
                    if a == b:
                        continue
                    trial = dict(best)
                    trial[a] += step; trial[b] -= step
                    if trial[b] < cur[b] or trial[a] > self.params[a].numel() - 1:
                        continue
                    masks = keep_top(mag, self.masks, s, budgets={n: trial[n] / self.params[n].numel() for n in self.names})
                    l = self.loss(masks)
                    if l < best_loss:
                        best, best_loss, improved = trial, l, True
            if not improved:
                step //= 2
                if step == 0:
                    break
        return keep_top(mag, self.masks, s, budgets={n: best[n] / self.params[n].numel() for n in self.names})


def run(rule, s, seed, data, opt="adam", lr=1e-3, epochs=3, bs=64, model_name="lenet300"):
    torch.manual_seed(seed)
    model = build_model(model_name)
    total = steps_per_epoch(data.train, bs) * epochs
    p = Proto(model, rule, s, total, seed=seed)
    o = make_optimizer(opt, model.parameters(), lr)
    st = train(model, data.train, epochs=epochs, batch_size=bs, optimizer=o, seed=seed,
               after_step=p, progress=False)
    p.zero()
    zeros = sum(int((model.get_parameter(n) == 0).sum()) for n in p.names) / sum(m.numel() for m in p.masks.values())
    return {"rule": rule, "s": s, "seed": seed, "opt": opt, "test": accuracy(model, data.test),
            "zeros": zeros, "seconds": st.seconds, "event_seconds": p.event_seconds,
            "hook": st.hook_seconds}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--rules", default="gmp,gmp-layer")
    ap.add_argument("--sparsities", default="0.98")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--opt", default="adam")
    ap.add_argument("--model", default="lenet300")
    a = ap.parse_args()
    data = load_dataset("mnist", a.data_dir)
    lr = 1e-3 if a.opt == "adam" else 0.05
    for seed in map(int, a.seeds.split(",")):
        for s in map(float, a.sparsities.split(",")):
            for r in a.rules.split(","):
                print(json.dumps(run(r, s, seed, data, a.opt, lr, model_name=a.model)), flush=True)
