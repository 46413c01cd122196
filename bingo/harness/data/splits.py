"""A dataset as the harness uses it: train, validation and test splits, and the metric
its runs report (``accuracy`` for images, ``loss`` for text: lower is better)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Splits:
    train: Any  # a Split of images, or a TextSplit of characters
    val: Any
    test: Any
    test_exact: Optional[Any] = None  # CIFAR-10: the test images known pixel-exact
    metric: str = "accuracy"
