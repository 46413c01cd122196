"""Plant one known bug at a time in a copy of the package and check that the tests fail.

The suite is only worth what it catches. Each mutant (tests/mutant_list.py) is a bug a test exists for
(the holes of issue 20's audit, and the ones it asked to cover next); this script copies
the package, the kernels and the tests to a temporary folder, applies one mutant there
(the working tree is never written), runs the test files where that bug belongs, and
reports whether they failed ("caught") or passed ("MISSED"). Before any mutant, the
unchanged copy must pass the same files, and the copy must be what Python imports.

Run by hand (not part of CI's default run; 3-4 minutes on the 2-core dev VM):

    python tests/mutants.py --data-dir ../shared/data            # every mutant
    python tests/mutants.py --data-dir ../shared/data --only targets-offset rule-sign-mean
    python tests/mutants.py --list

Exit status 0 when every mutant was caught. C++ mutants rebuild the extension in the
copy (about 30 s each); Triton mutants run the kernels under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]


from mutant_list import MUTANTS, Mutant  # beside this script, on its sys.path


def copy_tree(dest: Path) -> None:
    """The package (kernels inside it, as installed), its tests and its build files."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")

    def package(src, names):  # a bingo/kernels link (bench/gpu_checks.sh makes one) skipped
        return ignore(src, names) | ({"kernels"} if Path(src) == ROOT / "bingo" else set())
    shutil.copytree(ROOT / "bingo", dest / "bingo", ignore=package)
    shutil.copytree(ROOT / "kernels", dest / "bingo" / "kernels", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copytree(ROOT / "csrc", dest / "csrc", ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)


def environment(dest: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(dest), CI="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("BINGO_BACKEND", None)
    return env


def check_imports(dest: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    code = ("import bingo, bingo.kernels, bingo._cpu; "
            "print(bingo.__file__); print(bingo.kernels.__file__); print(bingo._cpu.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=dest, env=environment(dest),
                         capture_output=True, text=True, check=True).stdout.split()
    stray = [f for f in out if not Path(f).resolve().is_relative_to(dest.resolve())]
    if stray:
        raise SystemExit(f"the copy is not what Python imports: {stray}")


def rebuild(dest: Path) -> None:
    """Compile the copy's C++ extension anew (pybind11 comes with the test extra)."""
    for old in (dest / "bingo").glob("_cpu*.so"):
        old.unlink()
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=dest, env=environment(dest), capture_output=True, text=True)
    if proc.returncode != 0 or not list((dest / "bingo").glob("_cpu*.so")):
        raise SystemExit(f"the mutated C++ extension did not build (pip install pybind11?):\n"
                         f"{proc.stderr[-2000:]}")


def run_tests(dest: Path, tests: Sequence[str], data_dir: str) -> Tuple[int, str]:
    """(pytest's exit status, its last lines); stops at the first failure."""
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider",
           "--data-dir", data_dir]
    proc = subprocess.run(cmd, cwd=dest, env=environment(dest), capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith("FAILED") or ln.startswith("ERROR")]
    return proc.returncode, (failed[0] if failed else lines[-1] if lines else proc.stderr[-300:])


def apply(dest: Path, m: Mutant) -> None:
    path = dest / m.path
    text = path.read_text()
    if text.count(m.old) != 1:
        raise SystemExit(f"mutant {m.name}: its line occurs {text.count(m.old)} times in "
                         f"{m.path} (expected once); update the mutant to the code")
    path.write_text(text.replace(m.old, m.new))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("BINGO_DATA"))
    parser.add_argument("--only", nargs="*", default=None, help="mutant names")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="do not first check that the unchanged copy passes")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26s} {m.path:26s} {m.why}")
        return 0
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown or not chosen:
        parser.error(f"unknown mutants {sorted(unknown)}; see --list")
    if not args.data_dir:
        parser.error("pass --data-dir DIR (the folder holding MNIST/raw/) or set BINGO_DATA")
    data_dir = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="bingo-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        check_imports(base)
        if not args.skip_baseline:
            files = sorted({t for m in chosen for t in m.tests})
            start = time.perf_counter()
            rc, last = run_tests(base, files, data_dir)
            print(f"baseline (no mutant) on {len(files)} files: rc {rc} in "
                  f"{time.perf_counter() - start:.0f} s: {last}", flush=True)
            if rc != 0:
                print("the unchanged copy fails: fix the suite before judging mutants")
                return 2
        missed = []
        for m in chosen:
            dest = Path(tmp) / m.name
            shutil.copytree(base, dest, symlinks=True)
            apply(dest, m)
            if m.rebuild:
                rebuild(dest)
            start = time.perf_counter()
            rc, last = run_tests(dest, m.tests, data_dir)
            verdict = "caught" if rc == 1 else "MISSED" if rc == 0 else f"rc {rc}"
            if rc != 1:
                missed.append(m.name)
            print(f"{m.name:26s} {verdict:7s} {time.perf_counter() - start:5.0f} s  {last}",
                  flush=True)
            shutil.rmtree(dest)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} mutants caught"
          + (f"; missed or broken: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
