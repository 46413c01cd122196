"""MNIST from IDX files in torchvision's layout: ``<root>/MNIST/raw/*-ubyte[.gz]``.

Nothing is downloaded. The root comes from ``--data-dir`` or ``BINGO_DATA``.
The 60k training file is split into 55k train and the last 5k as validation
(the validation split picks thresholds; the 10k test set reports results).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
VALIDATION_SIZE = 5000
DATASETS = ("mnist",)


class DataNotFoundError(FileNotFoundError):
    """A data directory or file that should be there is not."""


def resolve_data_dir(data_dir: Optional[str | os.PathLike] = None) -> Path:
    """The data root: the argument if given, else ``BINGO_DATA``; it must exist."""
    chosen = data_dir if data_dir is not None else os.environ.get("BINGO_DATA")
    if not chosen:
        raise DataNotFoundError("no data directory: pass --data-dir DIR (or data_dir=) or set "
                                "BINGO_DATA=DIR, where DIR contains MNIST/raw/")
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data directory {root} does not exist; pass --data-dir (or set "
                                f"BINGO_DATA) to the folder that contains MNIST/raw/")
    return root


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _find(raw: Path, stem: str) -> Optional[Path]:
    for candidate in (raw / (stem + ".gz"), raw / stem):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Split:
    images: torch.Tensor  # float32 [n, 1, 28, 28], normalized
    labels: torch.Tensor  # int64 [n]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: Optional[int]) -> "Split":
        return self if n is None or n >= len(self) else Split(self.images[:n], self.labels[:n])


@dataclass
class MNIST:
    train: Split
    val: Split
    test: Split


def load_mnist(data_dir: Optional[str | os.PathLike] = None) -> MNIST:
    """Load MNIST's 55k/5k/10k train/validation/test splits as normalized tensors."""
    raw = resolve_data_dir(data_dir) / "MNIST" / "raw"
    paths = {k: _find(raw, stem) for k, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DataNotFoundError(
            f"MNIST files missing in {raw}: {', '.join(missing)}. Expected torchvision's raw "
            f"layout <data-dir>/MNIST/raw/ with all four IDX files; bingo never downloads")

    def images(key: str) -> torch.Tensor:
        x = torch.from_numpy(read_idx(paths[key]).astype(np.float32) / 255.0)
        return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(paths[key]).astype(np.int64))

    tx, ty = images("train_images"), labels("train_labels")
    cut = len(ty) - VALIDATION_SIZE
    return MNIST(train=Split(tx[:cut], ty[:cut]), val=Split(tx[cut:], ty[cut:]),
                 test=Split(images("test_images"), labels("test_labels")))


def load_dataset(name: str, data_dir: Optional[str | os.PathLike] = None) -> MNIST:
    if name != "mnist":
        raise ValueError(f"unknown dataset {name!r}; available: {DATASETS}")
    return load_mnist(data_dir)


def batches(split: Split, batch_size: int, generator: Optional[torch.Generator] = None,
            shuffle: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of a split, shuffled by ``generator`` (the last one may be short)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield split.images[idx], split.labels[idx]
