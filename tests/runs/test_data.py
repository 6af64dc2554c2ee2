import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_data, write_idx
from torchvision.datasets import FashionMNIST

from pleat.runs import data


def fake_mnist(root: Path, folder="MNIST", n=(12, 5)):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, k in (("train", n[0]), ("t10k", n[1])):
        images, labels = rng.integers(0, 256, (k, 28, 28)), rng.integers(0, 10, k)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (images, labels)
    return arrays


def test_idx_reader_and_md5(tmp_path):
    arrays = fake_mnist(tmp_path)
    d = data.load("mnist", tmp_path, download=False, verify=False)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert torch.equal(
        (d.x_train[:, 0] * 255).round().to(torch.uint8), torch.as_tensor(arrays["train"][0], dtype=torch.uint8)
    )
    assert torch.equal(d.y_test, torch.as_tensor(arrays["t10k"][1]))
    assert 0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1
    with pytest.raises(ValueError, match="md5"):
        data.load("mnist", tmp_path, download=False)
    subset = data.load("mnist", tmp_path, download=False, verify=False, train_subset=4, test_subset=2)
    assert subset.x_train.shape[0] == 4 and subset.y_test.shape[0] == 2


def test_missing_dataset_says_which_files_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz.*FashionMNIST/raw|FashionMNIST/raw.*"):
        data.load("fashion-mnist", tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.load("cifar10", tmp_path, download=False)


def test_cifar_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, 3).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": y}, f)
        written[name] = (x, y)
    d = data.load("cifar10", tmp_path, download=False, verify=False)
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    first = torch.as_tensor(written["data_batch_1"][0][0]).view(3, 32, 32)
    assert torch.equal((d.x_train[0] * 255).round().to(torch.uint8), first)
    assert d.y_train[3:6].tolist() == written["data_batch_2"][1]


def test_stl_binary_is_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8)
    for split in ("train", "test"):
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # the format stores columns first
        np.array([1, 10, 3, 4], dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    d = data.load("stl10", tmp_path, download=False, verify=False)
    assert torch.equal((d.x_train * 255).round().to(torch.uint8), torch.as_tensor(images))
    assert d.y_test.tolist() == [0, 9, 2, 3]


@needs_data
@pytest.mark.parametrize("name, first", [("mnist", [5, 0, 4, 1, 9]), ("fashion-mnist", [9, 0, 0, 3, 0])])
def test_real_files(name, first):
    d = data.load(name, SHARED, download=False)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train[:5].tolist() == first
    assert sorted(d.y_test.unique().tolist()) == list(range(10))


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("PLEAT_DATA", str(tmp_path / "env"))
    (tmp_path / "explicit").mkdir()
    assert data.data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    with pytest.raises(FileNotFoundError, match="is not a folder: create it"):
        data.data_root(str(tmp_path / "typo"))
    assert data.data_root("") == tmp_path / "env"
    monkeypatch.delenv("PLEAT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_root() == tmp_path / "cache" / "pleat" / "data"


@pytest.mark.parametrize("name, size", [("cifar10", 32), ("stl10", 96)])
def test_augmentation_per_sample_reproducible(name, size):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, size, size, generator=g)
    d = data.Dataset(name, x, torch.zeros(6), x, torch.zeros(6))
    a, b, c = d.augment(x, 1), d.augment(x, 1), d.augment(x, 2)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, x)
    # per sample: two copies of one image are transformed differently
    same = d.augment(x[:1].repeat(2, 1, 1, 1), 3)
    assert not torch.allclose(same[0], same[1])
    assert data.Dataset("mnist", x, x, x, x).augment(x, 1) is x


def test_md5_tables_come_from_torchvision():
    folder, md5, splits = data._files("fashion-mnist")
    assert folder == "FashionMNIST/raw" and md5["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert md5 == dict(FashionMNIST.resources)
    assert splits["test"] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_md5_is_checked_once_per_process_and_again_after_a_change(tmp_path, monkeypatch):
    import hashlib

    fake_mnist(tmp_path)
    folder = tmp_path / "MNIST" / "raw"
    real = data._files("mnist")
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    monkeypatch.setattr(data, "_files", lambda name: (real[0], md5, real[2]))
    hashed = []
    from torchvision.datasets import utils

    original = utils.check_integrity
    monkeypatch.setattr(utils, "check_integrity", lambda path, digest: hashed.append(path) or original(path, digest))
    data.ensure("mnist", tmp_path, download=False)
    data.ensure("mnist", tmp_path, download=False)
    assert len(hashed) == 4  # four files, hashed once
    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ValueError, match="md5"):
        data.ensure("mnist", tmp_path, download=False)
