"""The paper's datasets as tensors on the training device, md5-verified, with per-sample augmentation on batches.

Files live under a data root in torchvision's layout (MNIST/raw/*.gz, FashionMNIST/raw/*.gz,
cifar-10-batches-py/, stl10_binary/). The root is, in order: the `data_dir` config key (or `--data-dir`),
the PLEAT_DATA environment variable, then ~/.cache/pleat/data. Missing files are downloaded through torchvision
when allowed; offline, the error says which files to put where. Needs the `train` extra (torchvision, kornia).
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


def data_root(data_dir: str | os.PathLike = "") -> Path:
    """Where datasets live: `data_dir`, else $PLEAT_DATA, else $XDG_CACHE_HOME/pleat/data (~/.cache/pleat/data)."""
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():  # a typo must not become a fresh download into a new folder
            raise FileNotFoundError(f"data_dir {data_dir} is not a folder: create it to download the data there")
        return root
    if os.environ.get("PLEAT_DATA"):
        return Path(os.environ["PLEAT_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pleat" / "data"


def _files(name: str) -> tuple[str, dict[str, str], dict[str, list[str]]]:
    """(folder under the root, {file: md5}, {"train"/"test": files}) from torchvision's own tables."""
    from torchvision import datasets as tv

    if name in ("mnist", "fashion-mnist"):
        cls = tv.MNIST if name == "mnist" else tv.FashionMNIST
        md5 = dict(cls.resources)
        return (
            f"{cls.__name__}/raw",
            md5,
            {
                "train": ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
                "test": ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
            },
        )
    if name == "cifar10":
        cls = tv.CIFAR10
        md5 = dict(cls.train_list + cls.test_list)
        return cls.base_folder, md5, {"train": [f for f, _ in cls.train_list], "test": [f for f, _ in cls.test_list]}
    if name == "stl10":
        cls = tv.STL10
        md5 = {f: m for f, m in cls.train_list + cls.test_list if not f.startswith("unlabeled")}
        return cls.base_folder, md5, {"train": ["train_X.bin", "train_y.bin"], "test": ["test_X.bin", "test_y.bin"]}
    raise ValueError(f"unknown dataset {name!r}; known: mnist, fashion-mnist, cifar10, stl10")


def _download(name: str, root: Path) -> None:
    from torchvision import datasets as tv

    cls = {"mnist": tv.MNIST, "fashion-mnist": tv.FashionMNIST, "cifar10": tv.CIFAR10, "stl10": tv.STL10}[name]
    if name == "stl10":
        cls(str(root), split="train", download=True)
    else:
        cls(str(root), train=True, download=True)


def ensure(name: str, root: Path, download: bool = True, verify: bool = True) -> Path:
    """The dataset's folder, after fetching missing files (when `download`) and checking every file's md5."""
    from torchvision.datasets.utils import check_integrity

    folder, md5, _ = _files(name)
    path = root / folder
    missing = [f for f in md5 if not (path / f).exists()]
    if missing and download:
        try:
            _download(name, root)
        except Exception as e:  # offline, or the server refused: fall through to the message below
            reason = f" (download failed: {e})"
        else:
            reason = ""
        missing = [f for f in md5 if not (path / f).exists()]
    else:
        reason = ""
    if missing:
        raise FileNotFoundError(
            f"{name} is not in {path}{reason}: put the official files {', '.join(missing)} there "
            f"(torchvision's layout), or point data_dir / --data-dir / PLEAT_DATA at a folder that holds them"
        )
    if verify:
        for f, digest in md5.items():
            if _verified(path / f, digest):
                continue
            if not check_integrity(str(path / f), digest):
                raise ValueError(
                    f"{path / f} fails its md5 check (expected {digest}): the file is corrupt or not "
                    "the official one; replace it (or delete it to download it again)"
                )
            _VERIFIED.add(_identity(path / f, digest))
    return path


# Files whose md5 this process has checked, keyed by (path, size, mtime, md5): each is hashed once per process
# (a test session, a sweep worker), and again only when it changes.
_VERIFIED: set[tuple] = set()


def _identity(path: Path, digest: str) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, digest)


def _verified(path: Path, digest: str) -> bool:
    return path.exists() and _identity(path, digest) in _VERIFIED


def _idx(path: Path) -> Tensor:
    """An IDX file (gzip-compressed), the format of MNIST and Fashion-MNIST."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned bytes
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).view(dims)


def _read(name: str, path: Path, split: str) -> tuple[Tensor, Tensor]:
    """uint8 images [N, C, H, W] and int64 labels [N] of one split."""
    files = _files(name)[2][split]
    if name in ("mnist", "fashion-mnist"):
        images, labels = _idx(path / files[0]), _idx(path / files[1])
        return images.unsqueeze(1), labels.long()
    if name == "cifar10":
        xs, ys = [], []
        for f in files:
            with open(path / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(torch.as_tensor(entry["data"]).view(-1, 3, 32, 32))
            ys.append(torch.as_tensor(entry["labels"] if "labels" in entry else entry["fine_labels"]))
        return torch.cat(xs), torch.cat(ys).long()
    images = torch.frombuffer(bytearray((path / files[0]).read_bytes()), dtype=torch.uint8)
    images = images.view(-1, 3, 96, 96).transpose(2, 3)  # STL-10 stores each image column-major
    labels = torch.frombuffer(bytearray((path / files[1]).read_bytes()), dtype=torch.uint8).long() - 1
    return images.contiguous(), labels


@dataclass
class Dataset:
    """Images in [0, 1] as float tensors [N, C, H, W] and int64 labels, all on the training device."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int = 10
    y_train_clean: Tensor | None = None  # the true labels, where `y_train` holds noisy ones (label_noise)
    pipeline: str = ""  # the augmentation's name in `augmentation` (empty: the dataset's own, or none)

    @property
    def augmented(self) -> bool:
        return augmentation(self.pipeline or self.name) is not None

    def augment(self, x: Tensor, seed: int) -> Tensor:
        """The training augmentation of a batch, drawn per sample; the same seed gives the same batch."""
        pipeline = augmentation(self.pipeline or self.name)
        if pipeline is None:
            return x
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return pipeline(x)


_PIPELINES: dict = {}


def augmentation(name: str):
    """The augmentation `name` as a kornia pipeline acting per sample on batches, or None.

    The paper's: CIFAR-10: random resized crop, 60-100% of the area, aspect 3/4-4/3. STL-10: crop 8-100%,
    horizontal flip, grayscale with p = 0.1, colour jitter 0.5 (brightness, contrast, saturation, hue), rotation up
    to 180 degrees. Beyond the paper, "crop-flip" (config `augment = true` on MNIST and Fashion-MNIST): a 28x28
    crop of the image padded by 2 pixels of zeros, and a horizontal flip with p = 0.5.
    """
    if name not in ("cifar10", "stl10", "crop-flip"):
        return None
    if name not in _PIPELINES:
        import kornia.augmentation as K
        from torch import nn

        if name == "cifar10":
            _PIPELINES[name] = K.RandomResizedCrop((32, 32), scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), p=1.0)
        elif name == "crop-flip":
            _PIPELINES[name] = nn.Sequential(K.RandomCrop((28, 28), padding=2, p=1.0), K.RandomHorizontalFlip())
        else:
            _PIPELINES[name] = nn.Sequential(
                K.RandomResizedCrop((96, 96), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p=1.0),
                K.RandomHorizontalFlip(),
                K.RandomGrayscale(p=0.1),
                K.ColorJitter(0.5, 0.5, 0.5, 0.5, p=1.0),
                K.RandomRotation(180.0, p=1.0),
            )
    return _PIPELINES[name]


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    train_subset: int = 0,
    test_subset: int = 0,
    download: bool = True,
    verify: bool = True,
) -> Dataset:
    """Load a dataset onto `device` as tensors.

    Args:
        name: mnist | fashion-mnist | cifar10 | stl10.
        root: the data root (default: `data_root()`).
        train_subset, test_subset: keep only the first N examples (0: all).
        download: fetch missing files through torchvision.
        verify: check every file against torchvision's md5 (turn off only for files you wrote yourself).
    """
    root = data_root(root or "")
    path = ensure(name, root, download=download, verify=verify)
    splits = []
    for split, limit in (("train", train_subset), ("test", test_subset)):
        x, y = _read(name, path, split)
        if limit:
            x, y = x[:limit], y[:limit]
        splits.append((x.to(device).float().div_(255), y.to(device)))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_test, y_test)
