"""MNIST from IDX files: real contents, the splits, and clear errors."""
import shutil

import pytest
import torch

from bingo.harness.data import DataNotFoundError, load_mnist, read_idx, resolve_data_dir


def test_real_mnist_splits_and_label_counts(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (55000, 5000, 10000)
    counts = torch.bincount(torch.cat([mnist.train.labels, mnist.val.labels])).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.train.images.shape == (55000, 1, 28, 28)
    assert abs(mnist.train.images.mean().item()) < 0.02  # normalized with MNIST's mean/std
    assert abs(mnist.train.images.std().item() - 1.0) < 0.02


def test_read_idx_uncompressed_equals_gzip(data_dir, tmp_path):
    import gzip
    src = data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    assert (read_idx(plain) == read_idx(src)).all() and read_idx(plain).shape == (10000,)


def test_missing_file_names_what_is_expected(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    with pytest.raises(DataNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\], "
                                                r"t10k-labels-idx1-ubyte\[\.gz\]") as err:
        load_mnist(tmp_path)
    assert str(raw) in str(err.value) and "never downloads" in str(err.value)


def test_missing_data_directory(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="does not exist.*--data-dir"):
        load_mnist(tmp_path / "nowhere")
    monkeypatch.delenv("BINGO_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="pass --data-dir DIR.*BINGO_DATA"):
        resolve_data_dir(None)
    monkeypatch.setenv("BINGO_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
