"""CIFAR-10 and tinyshakespeare read from the shared files (their README's checks), the
CIFAR augmentation against a per-image reference, and every reader naming a missing or
damaged file and the fix."""
import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from bingo.harness.data import (
    DataCorruptError,
    DataNotFoundError,
    Split,
    batches,
    crop_and_flip,
    load_cifar10,
    load_dataset,
    load_mnist,
    load_text,
)
from bingo.harness.data.cifar10 import CIFAR_MEAN, CIFAR_STD, read_batch


def test_cifar10_splits_labels_and_pixels_match_the_readme(cifar10, data_dir):
    assert (len(cifar10.train), len(cifar10.val), len(cifar10.test)) == (45000, 5000, 10000)
    assert cifar10.train.images.shape == (45000, 3, 32, 32) and cifar10.train.augment
    assert not cifar10.val.augment and not cifar10.test.augment
    assert cifar10.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar10.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    every = torch.cat([cifar10.train.labels, cifar10.val.labels])
    assert torch.bincount(every).tolist() == [5000] * 10
    assert torch.bincount(cifar10.test.labels).tolist() == [1000] * 10
    pixels = cifar10.train.images * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) \
        + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    pixels = torch.cat([pixels, cifar10.val.images * torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
                        + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)])
    means = (pixels.mean((0, 2, 3)) * 255).tolist()
    assert means == pytest.approx([125.31, 122.95, 113.87], abs=0.01)
    exact, labels = read_batch(data_dir / "cifar-10-batches-py" / "test_batch_exact_1000")
    assert len(cifar10.test_exact) == 1000
    assert torch.equal(cifar10.test_exact.labels, torch.from_numpy(labels))
    stored = torch.from_numpy(exact).float() / 255
    back = cifar10.test_exact.images * torch.tensor(CIFAR_STD).view(1, 3, 1, 1) \
        + torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    assert (back - stored).abs().max() < 1e-5  # the first 1,000 are the exact file
    assert load_dataset("cifar10", data_dir).train.labels[0] == 6


def test_the_crop_and_flip_is_a_shifted_padded_copy_drawn_from_the_generator(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    images = torch.randn(7, 3, 5, 6, generator=g) + 2.0  # nonzero, odd sizes
    got = crop_and_flip(images, torch.Generator().manual_seed(fresh_seed), pad=2)
    again = crop_and_flip(images, torch.Generator().manual_seed(fresh_seed), pad=2)
    assert torch.equal(got, again)
    draw = torch.Generator().manual_seed(fresh_seed)
    dy = torch.randint(0, 5, (7,), generator=draw)
    dx = torch.randint(0, 5, (7,), generator=draw)
    flip = torch.rand(7, generator=draw) < 0.5
    for i in range(7):
        padded = torch.nn.functional.pad(images[i], (2, 2, 2, 2))
        expected = padded[:, dy[i]:dy[i] + 5, dx[i]:dx[i] + 6]
        if flip[i]:
            expected = expected.flip(-1)
        assert torch.equal(got[i], expected)


def test_batches_augment_only_the_split_that_asks(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    x, y = torch.randn(20, 3, 8, 8, generator=g), torch.arange(20)
    plain = list(batches(Split(x, y), 8, torch.Generator().manual_seed(fresh_seed)))
    aug = list(batches(Split(x, y, augment=True), 8, torch.Generator().manual_seed(fresh_seed)))
    assert [len(b[0]) for b in aug] == [8, 8, 4]
    assert torch.equal(plain[0][1], aug[0][1])  # the same order, drawn first
    assert torch.equal(plain[0][0], x[plain[0][1]])
    assert not torch.equal(aug[0][0], plain[0][0])
    assert (aug[0][0] == 0).any()  # zero padding came in with the shifts (randn has no 0)


def test_tinyshakespeare_is_split_90_10_with_65_characters(data_dir):
    corpus = load_text(data_dir)
    assert corpus.vocab_size == 65 and corpus.vocab[0] == "\n" and corpus.vocab[1] == " "
    assert (len(corpus.train), len(corpus.val)) == (1003854, 111540)
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert corpus.decode(corpus.train[:20]) == text[:20]
    assert corpus.decode(corpus.val[-20:]) == text[-20:]


def _copy_cifar(data_dir, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(data_dir / "cifar-10-batches-py", folder)
    return folder


def test_cifar10_missing_and_damaged_files_are_named_with_the_fix(data_dir, tmp_path):
    folder = _copy_cifar(data_dir, tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match=r"missing in .*: data_batch_3\. Expected"):
        load_cifar10(tmp_path)
    good = (data_dir / "cifar-10-batches-py" / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(good[:len(good) // 2])  # cut off in a copy
    with pytest.raises(DataCorruptError, match=r"data_batch_3 is damaged .*copy the CIFAR-10"):
        load_cifar10(tmp_path)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, f)
    with pytest.raises(DataCorruptError, match=r"not uint8 \[n, 3072\]"):
        load_cifar10(tmp_path)


def test_a_cut_off_mnist_gz_names_the_file_not_a_bare_eoferror(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_dir / "MNIST" / "raw", raw)
    name = "t10k-images-idx3-ubyte.gz"
    whole = (raw / name).read_bytes()
    (raw / name).write_bytes(whole[:len(whole) // 3])
    with pytest.raises(DataCorruptError, match=rf"{name} is damaged \(EOFError.*copy the MNIST"):
        load_mnist(tmp_path)
    (raw / name).write_bytes(gzip.compress(gzip.decompress(whole)[:1000]))  # a short body
    with pytest.raises(DataCorruptError, match=r"header says \[10000, 28, 28\]"):
        load_mnist(tmp_path)


def test_text_missing_and_damaged(tmp_path):
    with pytest.raises(DataNotFoundError, match="tinyshakespeare/input.txt"):
        load_text(tmp_path)
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_bytes(b"\xff\xfe" + b"a" * 2000)
    with pytest.raises(DataCorruptError, match="not UTF-8"):
        load_text(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", tmp_path)
