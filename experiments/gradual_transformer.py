"""Pruning during the training run on the character transformer of
``tiny_transformer.py`` (2 layers, d 64; its 7 Linear weights are the targets, the
embedding and attention's packed q/k/v projection are not): dense, ``gmp`` (global),
``gmp-layer`` and ``bingo-gradual`` on the same run (initial weights, batches), the
held-out loss at each sparsity and seed (docs/results.md, *Pruning during the training
run*).

    python experiments/gradual_transformer.py --data-dir ../shared/data --seeds 0,1,2

(``--margin 0``: the events' rule before 2026-12-06, the lowest mean loss.)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from tiny_transformer import TinyLM, corpus, sequence_loss, windows

from bingo.harness.baselines.gmp import GradualMagnitudePruning
from bingo.pruning.gradual_ticket import DEFAULT_MARGIN, GradualTicketPruning

METHODS = ("dense", "gmp", "gmp-layer", "bingo-gradual")


def run(method: str, sparsity: float, seed: int, data, args) -> dict:
    train_ids, held_ids, vocab = data
    torch.manual_seed(seed)
    model = TinyLM(vocab)
    options = dict(sparsity=sparsity, total_steps=args.steps, every=args.every)
    hook = {"dense": lambda: None,
            "gmp": lambda: GradualMagnitudePruning(model, **options),
            "gmp-layer": lambda: GradualMagnitudePruning(model, scope="layer", **options),
            "bingo-gradual": lambda: GradualTicketPruning(
                model, loss_fn=sequence_loss, calibration=args.calibration, seed=seed,
                margin=args.margin, **options)}[method]()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen, start = torch.Generator().manual_seed(seed), time.perf_counter()
    for _ in range(args.steps):
        x, y = windows(train_ids, 32, gen)
        opt.zero_grad()
        sequence_loss(model(x), y).backward()
        opt.step()
        if hook is not None:
            hook.step(x, y)
    seconds = time.perf_counter() - start
    zeros = hook.finish().sparsity if hook is not None else 0.0
    xh, yh = windows(held_ids, 1024, torch.Generator().manual_seed(seed + 1))
    model.eval()
    with torch.no_grad():
        loss = float(sequence_loss(model(xh), yh))
    out = {"method": method, "sparsity": sparsity, "seed": seed, "held_out_loss": loss,
           "zeros": zeros, "seconds": seconds}
    if isinstance(hook, GradualTicketPruning):
        out["chosen"] = dict(hook.chosen)
        out["vetoed"] = hook.vetoed
        out["event_seconds"] = hook.event_seconds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sparsities", default="0.5,0.7,0.9")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=10, help="steps between two events")
    ap.add_argument("--calibration", type=int, default=256, help="kept sequences")
    ap.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                    help="bingo-gradual's events: standard errors to beat magnitude's mask by")
    ap.add_argument("--out", default=None, help="write every row as JSON here")
    args = ap.parse_args()
    data = corpus(args.data_dir)
    rows = []
    for seed in map(int, args.seeds.split(",")):
        rows.append(run("dense", 0.0, seed, data, args))
        print(json.dumps(rows[-1]), flush=True)
        for s in map(float, args.sparsities.split(",")):
            for method in METHODS[1:]:
                rows.append(run(method, s, seed, data, args))
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print("| sparsity | " + " | ".join(METHODS[1:]) + " | bingo - best gmp |")
    print("|---:|" + "---:|" * len(METHODS))
    for s in map(float, args.sparsities.split(",")):
        mean = {m: statistics.mean(r["held_out_loss"] for r in rows
                                   if r["method"] == m and r["sparsity"] == s)
                for m in METHODS[1:]}
        each = {m: ", ".join(f"{r['held_out_loss']:.4f}" for r in rows
                             if r["method"] == m and r["sparsity"] == s) for m in METHODS[1:]}
        gap = mean["bingo-gradual"] - min(mean["gmp"], mean["gmp-layer"])
        print(f"| {s:.0%} | " + " | ".join(f"{mean[m]:.4f} ({each[m]})" for m in METHODS[1:])
              + f" | {gap:+.4f} |")
    dense = [r["held_out_loss"] for r in rows if r["method"] == "dense"]
    print(f"dense: {statistics.mean(dense):.4f} ({', '.join(f'{d:.4f}' for d in dense)})")


if __name__ == "__main__":
    main()
