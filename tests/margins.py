"""The statistical assertions on fresh seeds, and the margins they keep over many seeds.

A test whose threshold holds only on most seeds is a flaky test. Each such assertion
calls :func:`record` with its margin (how far the measured value is on the passing side
of its threshold, in the threshold's units; zero or less: it failed), right before
asserting.
Run by hand, this script runs those tests once per seed (``BINGO_TEST_SEED``, which the
``fresh_seed`` fixture honours) and prints, per assertion, the smallest and the median
margin and how many seeds failed:

    python tests/margins.py --data-dir ../shared/data --seeds 50

Not part of CI's default run (about 15 minutes for 50 seeds on 2 cores); the figures
of its last run are quoted next to each assertion.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
# the tests that record margins (each keeps its statistical assertions next to a record())
TESTS = (
    "tests/test_estimators.py::test_budget_balancing_of_many_layers_probes_them_and_tries_few_pairs",
    "tests/test_estimators.py::test_kept_prefixes_give_the_losses_of_whole_forwards",
    "tests/test_refit.py::test_refit_recovers_what_one_shot_pruning_lost_on_mnist",
    "tests/test_search.py::test_scores_follow_the_evaluated_subsets",
    "tests/test_regression.py::test_regression_scores_are_each_layers_coefficients_times_its_features",
)


def record(name: str, margin: float) -> None:
    """Note an assertion's margin when ``BINGO_MARGINS`` names a file (else nothing)."""
    path = os.environ.get("BINGO_MARGINS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "margin": float(margin),
                                "seed": os.environ.get("BINGO_TEST_SEED")}) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("BINGO_DATA"))
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("-k", nargs="*", default=None,
                        help="only the tests whose id contains one of these")
    parser.add_argument("--out", default=None, help="also keep every row (JSON lines) here")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("pass --data-dir DIR (the folder holding MNIST/raw/) or set BINGO_DATA")
    tests = [t for t in TESTS if args.k is None or any(k in t for k in args.k)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "margins.jsonl"
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            env = dict(os.environ, BINGO_TEST_SEED=str(seed), BINGO_MARGINS=str(out))
            # assertion failures are what is being counted: the margins say which
            subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-p",
                            "no:cacheprovider", "--data-dir", args.data_dir], cwd=ROOT,
                           env=env, capture_output=True)
            print(f"seed {seed} done", file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(out.read_text())
        seen = defaultdict(list)
        for line in out.read_text().splitlines():
            row = json.loads(line)
            seen[row["name"]].append(row["margin"])
    print(f"{'assertion':70s} {'seeds':>5s} {'failed':>6s} {'min':>10s} {'median':>10s}")
    for name, values in sorted(seen.items()):
        failed = sum(v <= 0 for v in values)
        print(f"{name:70s} {len(values):5d} {failed:6d} {min(values):10.4g} "
              f"{statistics.median(values):10.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
