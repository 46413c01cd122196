"""The BINGO paper's Table 1 on this project's harness, at its protocol and a strict one.

Paper (Panangat 2025, Table 1; MNIST, MLP 784-128-64-10, Adam 1e-3, batch 64, 10
epochs; prune until test accuracy falls from 97% to 90%): IMP 122 min and 85% of the
weights pruned, BINGO 17 min and 71%.

Here: the same model and training, every method through ``bingo compare`` (the floor is
checked on the 5k validation split; test accuracy is reported):

1. protocol: floor 90%, methods bingo, imp, magnitude;
2. strict: floor = the dense model's validation accuracy minus 1 point.

    python experiments/paper_table1.py --data-dir ../shared/data --out runs/table1

writes <out>/{protocol,strict}/ (results.json, results.md, plot) and <out>/table1.md.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

from bingo.harness.compare import CompareJob, run_compare
from bingo.harness.compare_report import write_outputs

PAPER = {"imp": (122.0, 0.85), "bingo": (17.0, 0.71)}  # minutes, share of weights pruned


def job(data_dir: str, floor: float, **overrides) -> CompareJob:
    base = dict(model="paper-mlp", data_dir=data_dir, epochs=10, batch_size=64,
                optimizer="adam", lr=1e-3, methods=("bingo", "imp", "magnitude"),
                sparsities=(), min_accuracy=floor)
    return CompareJob(**{**base, **overrides})


def rows(results) -> list[str]:
    imp = next(m for m in results["methods"] if m["method"] == "imp")
    out = []
    for m in results["methods"]:
        t = m["threshold"]
        paper = PAPER.get(m["method"])
        out.append(
            f"| {m['method']} | {100 * t['sparsity']:.1f}% | {100 * t['test_accuracy']:.2f}% | "
            f"{m['seconds'] / 60:.1f} | {m['seconds'] / imp['seconds']:.2f} | "
            + (f"{100 * paper[1]:.0f}% | {paper[0]:.0f} |" if paper else " |  |"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", type=Path, default=Path("runs/table1"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-limit", type=int, default=None)
    args = p.parse_args()
    extra = dict(epochs=args.epochs, train_limit=args.train_limit)
    protocol = run_compare(job(args.data_dir, 0.90, **extra))
    write_outputs(protocol, args.out / "protocol")
    dense_val = next(m for m in protocol["methods"] if m["method"] == "magnitude")[
        "dense_val_accuracy"]
    strict_floor = round(dense_val - 0.01, 4)
    strict = run_compare(job(args.data_dir, strict_floor, **extra))
    write_outputs(strict, args.out / "strict")
    head = ("| method | weights pruned | test acc there | minutes | × IMP time | "
            "paper: pruned | paper: minutes |\n|---|---:|---:|---:|---:|---:|---:|")
    text = [f"Machine: {platform.processor() or platform.machine()}, "
            f"{protocol['environment']['cpu_count']} CPUs, torch "
            f"{protocol['environment']['torch']}; BINGO's search backend: "
            f"{protocol['environment'].get('search_backend')}.", "",
            f"Protocol (floor 90% validation accuracy; dense test "
            f"{100 * protocol['methods'][0]['dense_test_accuracy']:.2f}%):", "", head,
            *rows(protocol), "",
            f"Strict (floor {100 * strict_floor:.2f}% = dense validation "
            f"{100 * dense_val:.2f}% minus 1 point):", "", head, *rows(strict), ""]
    (args.out / "table1.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
