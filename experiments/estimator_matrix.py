"""Issue 5's matrix: every estimator against magnitude, one training run per cell.

{lenet300, paper-mlp, convnet} x {Adam 1e-3, SGD+momentum 0.05}, one-shot pruning to 90%
and 95% without retraining, test accuracy. Each cell is one ``bingo compare`` run (its
results.json and results.md under --out/<model>_<optimizer>/); the summary table goes to
--out/matrix.md.

    python experiments/estimator_matrix.py --data-dir ../shared/data --out runs/matrix

``--estimators calibrated --proxy-every 1`` reruns only the default with the fisher and
reset proxies from every step (movement always is; the library's default is every 3rd);
no random-subset searches are then needed: K = 0. ``--estimators calibrated
--no-movement`` measures the default without the movement proxy (its every-step pass
skipped). ``--refit`` refits every row's one-shot mask by least squares (bingo.refit).
"""
import argparse
import json
from pathlib import Path

from bingo.engine.proxies import DEFAULT_PROXY_EVERY
from bingo.evidence.estimators import ESTIMATORS
from bingo.harness.compare import CompareJob, run_compare
from bingo.harness.compare_report import write_outputs

MODELS = ("lenet300", "paper-mlp", "convnet")
OPTIMIZERS = {"adam": 1e-3, "sgd": 0.05}
SPARSITIES = (0.9, 0.95)
REGRESSION_EVERY = 4  # feeds the bingo:regression row; the other rows do not use it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/matrix"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help="the bingo:<estimator> rows (calibrated is always included)")
    parser.add_argument("--seed", type=int, default=0,
                        help="initial weights, data order and subsets")
    parser.add_argument("--proxy-every", type=int, default=DEFAULT_PROXY_EVERY,
                        help="fold the gradients into the proxies every n steps "
                             f"(default {DEFAULT_PROXY_EVERY}, the library's)")
    parser.add_argument("--movement", action=argparse.BooleanOptionalAction, default=True,
                        help="collect the movement proxy (--no-movement: the cheaper search; "
                             "give --estimators without movement and its mixture)")
    parser.add_argument("--refit", action="store_true",
                        help="refit each one-shot mask's kept weights by least squares "
                             "(bingo.refit), every row alike")
    parser.add_argument("--table-only", action="store_true",
                        help="rewrite matrix.md from --out/matrix.json without running")
    args = parser.parse_args()
    chosen = [e for e in args.estimators.split(",") if e and e != "calibrated"]
    methods = ("magnitude", "bingo:calibrated", *[f"bingo:{e}" for e in chosen])
    if args.table_only:
        cells = json.loads((args.out / "matrix.json").read_text())
        (args.out / "matrix.md").write_text(matrix_table(cells, methods))
        print(matrix_table(cells, methods))
        return
    cells = {}
    for model in args.models.split(","):
        for opt in args.optimizers.split(","):
            job = CompareJob(model=model, optimizer=opt, lr=OPTIMIZERS[opt], epochs=args.epochs,
                             data_dir=args.data_dir, methods=methods, sparsities=SPARSITIES,
                             regression_every=REGRESSION_EVERY if "regression" in chosen else 0,
                             proxy_every=args.proxy_every, movement=args.movement,
                             refit=args.refit, seed=args.seed)
            results = run_compare(job, progress=False)
            write_outputs(results, args.out / f"{model}_{opt}")
            cells[f"{model}_{opt}"] = results
    (args.out / "matrix.json").write_text(json.dumps(cells, indent=2))
    (args.out / "matrix.md").write_text(matrix_table(cells, methods))
    print(matrix_table(cells, methods))


def matrix_table(cells, methods) -> str:
    """Rows: cell x sparsity; columns: test accuracy per method; the default's margin."""
    head = ["cell", "sparsity", "dense"] + [m for m in methods] + ["calibrated − magnitude"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    margins = []
    for name, r in cells.items():
        acc = {m["method"]: {p["sparsity"]: p["test_accuracy"] for p in m["points"]}
               for m in r["methods"]}
        dense = next(m["dense_test_accuracy"] for m in r["methods"] if m["method"] == "magnitude")
        for s in SPARSITIES:
            margin = acc["bingo:calibrated"][s] - acc["magnitude"][s]
            margins.append(margin)
            lines.append(f"| {name} | {s:.0%} | {100 * dense:.2f} | " +
                         " | ".join(f"{100 * acc[m][s]:.2f}" for m in methods) +
                         f" | {100 * margin:+.2f} |")
    lines.append(f"\nMean margin of the default (calibrated) over magnitude: "
                 f"{100 * sum(margins) / len(margins):+.2f} pp; worst {100 * min(margins):+.2f} pp.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
