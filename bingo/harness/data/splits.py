"""A dataset as the harness uses it: train, validation and test splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .common import Split


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    test_exact: Optional[Split] = None  # CIFAR-10: the test images known pixel-exact
