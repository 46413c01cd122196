"""CIFAR-10 from torchvision's Python pickles: ``<root>/cifar-10-batches-py/``.
The 50,000 training images are split 45,000 train / the last 5,000 validation; the test
split is all 10,000 test images, and ``test_exact`` its first 1,000, the only ones known
pixel-exact in the shared copy (the rest are decoded JPEGs; see the data README). The
training split is augmented in ``batches`` (random crop with 4-pixel padding, flip)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from .common import DataNotFoundError, Split, damaged, resolve_data_dir
from .splits import Splits

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
EXACT_TEST = 1000
VALIDATION_SIZE = 5000
# per-channel mean and standard deviation of the 50,000 training images, on [0, 1]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_FIX = ("copy the CIFAR-10 pickles again (torchvision's layout, "
        "<data-dir>/cifar-10-batches-py/data_batch_1..5 and test_batch)")


def read_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """One pickle: uint8 images [n, 3, 32, 32] and int64 labels [n]."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise damaged(path, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
                      _FIX) from None
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise damaged(path, "not a CIFAR-10 batch (no 'data' and 'labels')", _FIX)
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or len(labels) != len(data):
        raise damaged(path, f"'data' is {data.dtype} {data.shape} with {len(labels)} labels, "
                      f"not uint8 [n, 3072] with n labels", _FIX)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise damaged(path, f"labels outside 0..9 ({labels.min()}..{labels.max()})", _FIX)
    return data.reshape(-1, 3, 32, 32), labels


def normalize(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_cifar10(data_dir: Optional[str | os.PathLike] = None) -> Splits:
    """Load CIFAR-10's 45k/5k/10k train/validation/test splits (and the exact 1k)."""
    folder = resolve_data_dir(data_dir) / "cifar-10-batches-py"
    missing = [n for n in TRAIN_FILES + (TEST_FILE,) if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 files missing in {folder}: {', '.join(missing)}. Expected torchvision's "
            f"layout <data-dir>/cifar-10-batches-py/ with data_batch_1..5 and test_batch; "
            f"bingo never downloads")
    parts = [read_batch(folder / n) for n in TRAIN_FILES]
    x = normalize(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    cut = len(y) - VALIDATION_SIZE
    tx, ty = read_batch(folder / TEST_FILE)
    test = Split(normalize(tx), torch.from_numpy(ty))
    return Splits(train=Split(x[:cut], y[:cut], augment=True), val=Split(x[cut:], y[cut:]),
                  test=test, test_exact=test.subset(EXACT_TEST))
