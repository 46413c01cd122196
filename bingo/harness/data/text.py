"""tinyshakespeare as characters: ``<root>/tinyshakespeare/input.txt``, the first 90% for
training and the last 10% for validation (nanoGPT's ``shakespeare_char`` split; the
vocabulary is the corpus's sorted characters, 65 of them)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

import torch

from .common import DataNotFoundError, damaged, resolve_data_dir

TRAIN_SHARE = 0.9


@dataclass
class CharCorpus:
    train: torch.Tensor  # int64 character ids
    val: torch.Tensor
    vocab: List[str]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def load_text(data_dir: Optional[str | os.PathLike] = None,
              name: str = "tinyshakespeare") -> CharCorpus:
    """The corpus's characters as ids, split 90/10 into train and validation."""
    path = resolve_data_dir(data_dir) / name / "input.txt"
    if not path.is_file():
        raise DataNotFoundError(f"no corpus at {path}: pass --data-dir DIR with "
                                f"{name}/input.txt in it; bingo never downloads")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise damaged(path, f"not UTF-8 text ({e.reason} at byte {e.start})",
                      f"copy {name}/input.txt again") from None
    if len(text) < 1000:
        raise damaged(path, f"only {len(text)} characters", f"copy {name}/input.txt again")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = int(TRAIN_SHARE * len(ids))
    return CharCorpus(train=ids[:cut], val=ids[cut:], vocab=vocab)
