"""MNIST from IDX files in torchvision's layout: ``<root>/MNIST/raw/*-ubyte[.gz]``.
The 60k training file is split into 55k train and the last 5k as validation (the
validation split picks thresholds; the 10k test set reports results)."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .common import DataNotFoundError, Split, damaged, resolve_data_dir
from .splits import Splits

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
VALIDATION_SIZE = 5000
_FIX = "copy the MNIST IDX files again (torchvision's raw layout, <data-dir>/MNIST/raw/)"


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as e:  # a cut-off or garbled .gz
        raise damaged(path, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
                      _FIX) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise damaged(path, "not an IDX file of unsigned bytes", _FIX)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=min(4 + 4 * ndim, len(data)))
    if body.size != int(np.prod(dims)):
        raise damaged(path, f"its header says {dims}, {int(np.prod(dims))} bytes, but it "
                      f"holds {body.size}", _FIX)
    return body.reshape(dims)


def _find(raw: Path, stem: str) -> Optional[Path]:
    for candidate in (raw / (stem + ".gz"), raw / stem):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(data_dir: Optional[str | os.PathLike] = None) -> Splits:
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
    return Splits(train=Split(tx[:cut], ty[:cut]), val=Split(tx[cut:], ty[cut:]),
                  test=Split(images("test_images"), labels("test_labels")))
