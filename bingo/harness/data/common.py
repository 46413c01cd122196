"""What every reader shares: the data root (``--data-dir`` or ``BINGO_DATA``; nothing is
ever downloaded), the errors that name a missing or damaged file and the fix, and the
labelled split with its shuffled, optionally augmented mini-batches."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F


class DataNotFoundError(FileNotFoundError):
    """A data directory or file that should be there is not."""


class DataCorruptError(ValueError):
    """A data file is there but truncated or not in its format."""


def resolve_data_dir(data_dir: Optional[str | os.PathLike] = None) -> Path:
    """The data root: the argument if given, else ``BINGO_DATA``; it must exist."""
    chosen = data_dir if data_dir is not None else os.environ.get("BINGO_DATA")
    if not chosen:
        raise DataNotFoundError("no data directory: pass --data-dir DIR (or data_dir=) or set "
                                "BINGO_DATA=DIR, where DIR contains MNIST/raw/, "
                                "cifar-10-batches-py/ or tinyshakespeare/")
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data directory {root} does not exist; pass --data-dir (or set "
                                f"BINGO_DATA) to the folder that contains MNIST/raw/, "
                                f"cifar-10-batches-py/ or tinyshakespeare/")
    return root


def damaged(path: Path, why: str, fix: str) -> DataCorruptError:
    return DataCorruptError(f"{path} is damaged ({why}): {fix}")


@dataclass
class Split:
    """Labelled examples; ``augment`` asks ``batches`` for CIFAR's random crop (4-pixel
    zero padding) and horizontal flip, drawn from the batches' generator."""

    images: torch.Tensor  # float32 [n, c, h, w], normalized
    labels: torch.Tensor  # int64 [n]
    augment: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: Optional[int]) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], self.augment)

    def to(self, device: torch.device | str) -> "Split":
        """The split held on ``device`` (batches are then drawn there; their order and
        augmentation still come from the CPU generator, the same as on the CPU)."""
        return Split(self.images.to(device), self.labels.to(device), self.augment)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                shuffle: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size].to(self.images.device)
            x = self.images[idx]
            yield (crop_and_flip(x, generator) if self.augment else x), self.labels[idx]


def batches(split, batch_size: int, generator: Optional[torch.Generator] = None,
            shuffle: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of a split (a Split of images or a TextSplit of characters), shuffled
    by ``generator`` (the last one may be short); augmented from the same generator when
    the split asks for it."""
    return split.batches(batch_size, generator, shuffle)


def crop_and_flip(images: torch.Tensor, generator: Optional[torch.Generator],
                  pad: int = 4) -> torch.Tensor:
    """Each image shifted by a random crop of its zero-padded copy (offsets 0..2*pad) and
    flipped left-right with probability 1/2 (He et al. 2016's CIFAR augmentation)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    on = images.device  # the draws above are the CPU generator's on every device
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].to(on)  # [n, 1, h, 1]
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :].to(on)  # [n,1,1,w]
    batch = torch.arange(n, device=on)[:, None, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].squeeze(1).permute(0, 3, 1, 2)
