"""The mutants of tests/mutants.py stay in step with the code: each one's line occurs
exactly once where it is planted and its test files (and functions) exist, so that an
edit which moves the line shows up in CI, not only when the mutants are next run by hand."""
from pathlib import Path

import pytest

from tests.mutant_list import MUTANTS

ROOT = Path(__file__).resolve().parents[1]


def _source(path: str) -> Path:
    """A mutant's file in this checkout (the copy installs kernels/ at bingo/kernels/)."""
    if path.startswith("bingo/kernels/"):
        return ROOT / path[len("bingo/"):]
    return ROOT / path


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_s_line_occurs_once_and_its_tests_exist(mutant):
    assert mutant.old != mutant.new
    assert _source(mutant.path).read_text().count(mutant.old) == 1, (
        f"mutant {mutant.name}: update tests/mutant_list.py to the code of {mutant.path}")
    assert mutant.tests
    for test in mutant.tests:  # a file, or a file::test_function
        path, _, function = test.partition("::")
        assert (ROOT / path).is_file(), f"mutant {mutant.name}: no test file {path}"
        assert not function or f"def {function}(" in (ROOT / path).read_text(), (
            f"mutant {mutant.name}: {path} has no {function}")


def test_the_mutant_names_are_unique():
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names)
