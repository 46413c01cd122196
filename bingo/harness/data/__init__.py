"""The data the harness trains and scores on, read from ``--data-dir`` / ``BINGO_DATA``
(never downloaded): MNIST (IDX), CIFAR-10 (Python pickles) and character corpora. Every
reader names a missing or damaged file and the fix."""
from __future__ import annotations

import os
from typing import Optional

from .cifar10 import load_cifar10
from .common import (
    DataCorruptError,
    DataNotFoundError,
    Split,
    batches,
    crop_and_flip,
    resolve_data_dir,
)
from .mnist import load_mnist, read_idx
from .splits import Splits
from .text import CharCorpus, load_text

IMAGE_DATASETS = {"mnist": load_mnist, "cifar10": load_cifar10}
DATASETS = ("mnist", "cifar10")  # what `bingo prune` / `bingo compare` train on


def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None) -> Splits:
    """An image dataset's splits by name (``mnist``, ``cifar10``)."""
    try:
        reader = IMAGE_DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: "
                         f"{', '.join(IMAGE_DATASETS)}") from None
    return reader(data_dir)


__all__ = ["CharCorpus", "DATASETS", "DataCorruptError", "DataNotFoundError", "IMAGE_DATASETS",
           "Split", "Splits", "batches", "crop_and_flip", "load_cifar10", "load_dataset",
           "load_mnist", "load_text", "read_idx", "resolve_data_dir"]
