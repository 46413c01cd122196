"""The BINGO paper's Table 1 on this project's harness, at its protocol and a strict one.

Paper (Panangat 2025, Table 1; MNIST, MLP 784-128-64-10, Adam 1e-3, batch 64, 10
epochs; prune until test accuracy falls from 97% to 90%): IMP 122 min and 85% of the
weights pruned, BINGO 17 min and 71%.

Here: the same model and training, every method through ``bingo compare`` (the floor is
checked on the 5k validation split; test accuracy is reported), two floors:

1. protocol: 90% validation accuracy;
2. strict: the dense model's validation accuracy minus 1 point.

Rows: BINGO one shot after training with the default estimator (bisected to the floor),
with and without ``--refit``; magnitude one shot likewise; IMP with rewinding (rounds
until validation falls below the floor); pruning during the one training run
(``bingo-gradual``, ``gmp``, ``gmp-layer``), which fixes its sparsity in advance, so
each runs the grid ``--grid`` and reports the largest grid sparsity above the floor.
IMP's and the gradual rows' strict cells come from the same runs as their protocol
cells (IMP's rounds and time up to the first round below the strict floor).

    python experiments/paper_table1.py --data-dir ../shared/data --out runs/table1

writes <out>/<part>/ (results.json, results.md, plot) and <out>/table1.md.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

from bingo.harness.compare import CompareJob, run_compare
from bingo.harness.compare_report import write_outputs

PAPER = {"imp": (122.0, 0.85), "bingo": (17.0, 0.71)}  # minutes, share of weights pruned
GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def job(data_dir: str, floor: float, **overrides) -> CompareJob:
    base = dict(model="paper-mlp", data_dir=data_dir, epochs=10, batch_size=64,
                optimizer="adam", lr=1e-3, methods=("bingo", "imp", "magnitude"),
                sparsities=(), min_accuracy=floor)
    return CompareJob(**{**base, **overrides})


def cell(name: str, t: Optional[Dict[str, Any]], seconds: float, imp_seconds: float,
         runs: str = "") -> str:
    paper = PAPER.get(name.split(" ")[0]) if "refit" not in name else None
    paper_cells = f"{100 * paper[1]:.0f}% | {paper[0]:.0f} |" if paper else " |  |"
    if t is None:
        return f"| {name} | none | | {seconds / 60:.1f}{runs} | {seconds / imp_seconds:.2f} | " \
               + paper_cells
    return (f"| {name} | {100 * t['sparsity']:.1f}% | {100 * t['test_accuracy']:.2f}% | "
            f"{seconds / 60:.1f}{runs} | {seconds / imp_seconds:.2f} | " + paper_cells)


def imp_at(history: List[Dict[str, Any]], floor: float):
    """IMP's answer at ``floor`` from its rounds: the last round above it, and the time
    a run stopping at the first round below it would take."""
    seconds, best = 0.0, None
    for r in history:
        seconds += r["seconds"]
        if r["round"] == 0:
            continue
        if r["val_accuracy"] < floor:
            break
        best = r
    return best, seconds


def grid_at(points: List[Dict[str, Any]], floor: float):
    ok = [p for p in points if p["val_accuracy"] >= floor]
    return max(ok, key=lambda p: p["sparsity"]) if ok else None


def table(parts: Dict[str, Dict[str, Any]], floor: float, tag: str) -> List[str]:
    one = {m["method"]: m for m in parts[f"{tag}-oneshot"]["methods"]}
    refit = {m["method"]: m for m in parts[f"{tag}-refit"]["methods"]}
    protocol = {m["method"]: m for m in parts["protocol-oneshot"]["methods"]}
    gradual = {m["method"]: m for m in parts["gradual"]["methods"]}
    best_imp, imp_seconds = imp_at(protocol["imp"]["history"], floor)
    lines = [cell("bingo (calibrated, one shot)", one["bingo"]["threshold"],
                  one["bingo"]["seconds"], imp_seconds),
             cell("bingo + refit", refit["bingo"]["threshold"], refit["bingo"]["seconds"],
                  imp_seconds),
             cell("bingo-gradual", grid_at(gradual["bingo-gradual"]["points"], floor),
                  gradual["bingo-gradual"]["seconds"], imp_seconds, f" ({len(GRID)} runs)"),
             cell("gmp", grid_at(gradual["gmp"]["points"], floor), gradual["gmp"]["seconds"],
                  imp_seconds, f" ({len(GRID)} runs)"),
             cell("gmp-layer", grid_at(gradual["gmp-layer"]["points"], floor),
                  gradual["gmp-layer"]["seconds"], imp_seconds, f" ({len(GRID)} runs)"),
             cell("imp", best_imp, imp_seconds, imp_seconds),
             cell("magnitude (one shot)", one["magnitude"]["threshold"],
                  one["magnitude"]["seconds"], imp_seconds),
             cell("magnitude + refit", refit["magnitude"]["threshold"],
                  refit["magnitude"]["seconds"], imp_seconds)]
    return lines


def gradual_rows(gradual: Dict[str, Any]) -> List[str]:
    out = ["| method | " + " | ".join(f"{s:.0%}" for s in GRID) + " | seconds a run |",
           "|---|" + "---:|" * (len(GRID) + 1)]
    for m in gradual["methods"]:
        by_s = {p["sparsity"]: p for p in m["points"]}
        cells = [f"{100 * by_s[s]['test_accuracy']:.2f}" for s in GRID]
        out.append(f"| {m['method']} | " + " | ".join(cells)
                   + f" | {m['seconds'] / len(GRID):.0f} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", type=Path, default=Path("runs/table1"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--floor", type=float, default=0.90, help="the protocol's floor (quick "
                   "runs on a --train-limit lower it)")
    args = p.parse_args()
    extra = dict(epochs=args.epochs, train_limit=args.train_limit)
    parts: Dict[str, Dict[str, Any]] = {}

    def run(name: str, j: CompareJob) -> Dict[str, Any]:
        parts[name] = run_compare(j)
        write_outputs(parts[name], args.out / name)
        return parts[name]

    protocol = run("protocol-oneshot", job(args.data_dir, args.floor, **extra))
    run("protocol-refit", job(args.data_dir, args.floor, methods=("bingo", "magnitude"), refit=True,
                              **extra))
    run("gradual", job(args.data_dir, args.floor, methods=("bingo-gradual", "gmp", "gmp-layer"),
                       sparsities=GRID, **extra))
    dense_val = next(m for m in protocol["methods"] if m["method"] == "magnitude")[
        "dense_val_accuracy"]
    strict_floor = round(dense_val - 0.01, 4)
    run("strict-oneshot", job(args.data_dir, strict_floor, methods=("bingo", "magnitude"),
                              **extra))
    run("strict-refit", job(args.data_dir, strict_floor, methods=("bingo", "magnitude"),
                            refit=True, **extra))
    head = ("| method | weights pruned | test acc there | minutes | × IMP time | "
            "paper: pruned | paper: minutes |\n|---|---:|---:|---:|---:|---:|---:|")
    env = protocol["environment"]
    text = [f"Machine: {platform.processor() or platform.machine()}, {env['cpu_count']} CPUs, "
            f"torch {env['torch']}; BINGO's search backend: {env.get('search_backend')}.", "",
            f"Protocol (floor {100 * args.floor:.0f}% validation accuracy; dense test "
            f"{100 * protocol['methods'][0]['dense_test_accuracy']:.2f}%, validation "
            f"{100 * dense_val:.2f}%):", "", head, *table(parts, args.floor, "protocol"), "",
            f"Strict (floor {100 * strict_floor:.2f}% = dense validation minus 1 point):", "",
            head, *table(parts, strict_floor, "strict"), "",
            "Pruning during the run, test accuracy on the grid:", "",
            *gradual_rows(parts["gradual"]), ""]
    (args.out / "table1.md").write_text("\n".join(text))
    (args.out / "parts.json").write_text(json.dumps(parts, indent=1))
    print("\n".join(text))


if __name__ == "__main__":
    main()
