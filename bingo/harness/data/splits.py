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

    def to(self, device) -> "Splits":
        """Every split held on ``device`` (a split shared by two names stays shared)."""
        moved: dict = {}

        def on(split):
            if split is None:
                return None
            if id(split) not in moved:
                moved[id(split)] = split.to(device)
            return moved[id(split)]
        return Splits(on(self.train), on(self.val), on(self.test), on(self.test_exact),
                      self.metric)
