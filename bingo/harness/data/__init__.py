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
from .text import CharCorpus, TextSplit, load_text, load_text_splits

IMAGE_DATASETS = {"mnist": load_mnist, "cifar10": load_cifar10}
READERS = {**IMAGE_DATASETS, "tinyshakespeare": load_text_splits}
DATASETS = tuple(READERS)  # what `bingo prune` / `bingo compare` train on
DATASET_METRIC = {"tinyshakespeare": "loss"}  # what a run reports; the others: accuracy


def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None) -> Splits:
    """A dataset's splits by name (``mnist``, ``cifar10``, ``tinyshakespeare``)."""
    try:
        reader = READERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(READERS)}") from None
    return reader(data_dir)


__all__ = ["CharCorpus", "DATASETS", "DATASET_METRIC", "DataCorruptError", "DataNotFoundError", "IMAGE_DATASETS",
           "Split", "Splits", "TextSplit", "batches", "crop_and_flip", "load_cifar10", "load_dataset",
           "load_mnist", "load_text", "load_text_splits", "read_idx", "resolve_data_dir"]
