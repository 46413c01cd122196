"""tinyshakespeare as characters: ``<root>/tinyshakespeare/input.txt``, the first 90% for
training and the last 10% for validation (nanoGPT's ``shakespeare_char`` split; the
vocabulary is the corpus's sorted characters, 65 of them), and the same corpus as the
harness's splits of windows (:class:`TextSplit`, :func:`load_text_splits`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch

from .common import DataNotFoundError, damaged, resolve_data_dir
from .splits import Splits

TRAIN_SHARE = 0.9
CONTEXT = 64  # characters a window holds (char-gpt's default context)


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


@dataclass
class TextSplit:
    """Characters as next-character windows of ``context``: input ids[i:i+T], target
    ids[i+1:i+T+1]. An epoch is ``len(self)`` windows, one per ``context`` characters:
    shuffled batches start at random offsets drawn from the generator (nanoGPT's
    sampling), unshuffled ones read the consecutive non-overlapping windows (evaluation:
    every character predicted once)."""

    ids: torch.Tensor  # int64 [characters]
    context: int = CONTEXT

    def __post_init__(self):
        if len(self.ids) <= self.context:
            raise ValueError(f"{len(self.ids)} characters hold no window of {self.context} "
                             f"and its next character: give more text (--train-limit is "
                             f"counted in characters for text)")

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.context

    def subset(self, n: Optional[int]) -> "TextSplit":
        """The first ``n`` characters (``--train-limit`` for text)."""
        return self if n is None or n >= len(self.ids) else TextSplit(self.ids[:n], self.context)

    def to(self, device: torch.device | str) -> "TextSplit":
        """The characters held on ``device`` (the windows' offsets still come from the CPU
        generator: the same batches as on the CPU)."""
        return TextSplit(self.ids.to(device), self.context)

    def batches(self, batch_size: int, generator: Optional[torch.Generator] = None,
                shuffle: bool = True) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        n, t = len(self), self.context
        if shuffle:
            starts = torch.randint(0, len(self.ids) - t, (n,), generator=generator)
        else:
            starts = torch.arange(n) * t
        span = torch.arange(t + 1)
        for i in range(0, n, batch_size):
            window = self.ids[(starts[i:i + batch_size, None] + span).to(self.ids.device)]
            yield window[:, :-1], window[:, 1:]


def load_text_splits(data_dir: Optional[str | os.PathLike] = None,
                     name: str = "tinyshakespeare", context: int = CONTEXT) -> Splits:
    """The corpus as the harness's splits: train on the first 90%, and the last 10% as the
    held-out split. nanoGPT's protocol has no third split, so ``test`` is the validation
    characters too: a text run reports its validation loss."""
    corpus = load_text(data_dir, name)
    val = TextSplit(corpus.val, context)
    return Splits(train=TextSplit(corpus.train, context), val=val, test=val, metric="loss")
