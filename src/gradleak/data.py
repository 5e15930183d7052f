"""Real image datasets as in-memory tensors: images float in [0, 1], shape [N, C, H, W].

Each dataset loads one split ("train" or "test"). torchvision datasets download into
`data_dir` when online; when their files are missing and cannot be fetched, loading fails
with one line naming the folder and the files expected.
"""
import socket
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision.transforms import functional as TF


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message is one line meant for the user."""


@dataclass
class Split:
    images: torch.Tensor  # float32 [N, C, H, W] in [0, 1]
    labels: torch.Tensor  # int64 [N]
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def load_split(cfg, split: str) -> Split:
    """Load `split` of the dataset described by the `dataset` config node."""
    loader = LOADERS[cfg.name]
    images, labels, num_classes = loader(cfg, split)
    images = _as_float_nchw(images)
    if getattr(cfg, "size", None) and images.shape[-1] != cfg.size:
        images = TF.resize(images, [cfg.size, cfg.size], antialias=True).clamp(0, 1)
    return Split(images.contiguous(), torch.as_tensor(labels, dtype=torch.long), int(num_classes))


def _as_float_nchw(images) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim == 3:  # [N, H, W] grayscale
        x = x.unsqueeze(1)
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC -> NCHW
        x = x.permute(0, 3, 1, 2)
    return x.float()


# --- bundled: scikit-learn's real handwritten digits (no network) -------------------------

def _digits(cfg, split: str):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # pixel values are 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target)
    return (x_tr, y_tr, 10) if split == "train" else (x_te, y_te, 10)


# --- torchvision datasets ------------------------------------------------------------------

@dataclass
class TorchvisionSource:
    factory: Callable
    expected: str  # where the files go, for the error message

    def __call__(self, cfg, split: str):
        root = Path(cfg.data_dir).expanduser()
        try:
            ds = self.factory(root, split, download=False)
        except (RuntimeError, FileNotFoundError):
            ds = self._download(root, split, cfg.name)
        images = ds.data
        labels = getattr(ds, "targets", None)
        labels = ds.labels if labels is None else labels
        if isinstance(images, torch.Tensor):
            images = images.numpy()
        return images, np.asarray(labels), len(ds.classes) if hasattr(ds, "classes") else 10

    def _download(self, root: Path, split: str, name: str):
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # offline machines must fail fast, not hang
        try:
            return self.factory(root, split, download=True)
        except Exception as exc:  # noqa: BLE001 - any download failure means "not available"
            raise DatasetError(
                f"dataset={name}: files not found in {root} (expected {self.expected.format(root=root)})"
                f" and download failed ({type(exc).__name__}); set data_dir=... to a folder that"
                f" has them, or use dataset=digits (bundled, no network)") from None
        finally:
            socket.setdefaulttimeout(previous)


def _svhn(root, split, download):
    ds = tvd.SVHN(str(root / "svhn"), split=split, download=download)
    ds.classes = [str(i) for i in range(10)]
    return ds


class _LFWPeople:
    """LFW people, funneled images, resized later to `size`; pixels kept as uint8 HWC."""

    def __init__(self, root, split, download):
        ds = tvd.LFWPeople(str(root), split=split, image_set="funneled", download=download)
        self.classes = list(ds.class_to_idx)
        self.targets = list(ds.targets)
        self.data = np.stack([np.asarray(ds.loader(path).resize((64, 64))) for path in ds.data])


_TV = {
    "mnist": TorchvisionSource(
        lambda r, s, download: tvd.MNIST(str(r), train=s == "train", download=download),
        "{root}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"),
    "fashionmnist": TorchvisionSource(
        lambda r, s, download: tvd.FashionMNIST(str(r), train=s == "train", download=download),
        "{root}/FashionMNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"),
    "cifar10": TorchvisionSource(
        lambda r, s, download: tvd.CIFAR10(str(r), train=s == "train", download=download),
        "{root}/cifar-10-batches-py/{{data_batch_1..5,test_batch}}"),
    "cifar100": TorchvisionSource(
        lambda r, s, download: tvd.CIFAR100(str(r), train=s == "train", download=download),
        "{root}/cifar-100-python/{{train,test,meta}}"),
    "svhn": TorchvisionSource(_svhn, "{root}/svhn/{{train,test}}_32x32.mat"),
    "lfw": TorchvisionSource(_LFWPeople, "{root}/lfw-py/lfw_funneled/ and peopleDev{{Train,Test}}.txt"),
}


# --- the user's own images -------------------------------------------------------------------

def _held_out(n: int, cfg, split: str) -> np.ndarray:
    """Deterministic split of a user dataset: the last `test_fraction` of a seeded shuffle."""
    order = np.random.default_rng(0).permutation(n)
    n_test = int(round(cfg.test_fraction * n))
    return order[n - n_test:] if split == "test" else order[: n - n_test]


def _npz(cfg, split: str):
    path = _existing_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except KeyError as exc:
        raise DatasetError(f"dataset=npz path={path}: missing array {exc}; expected 'x' uint8 "
                           "[N,H,W,C] and 'y' int labels") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # unreadable or corrupt
        raise DatasetError(f"dataset=npz path={path}: not a readable .npz file ({exc})".splitlines()[0]) from None
    _check_arrays(path, x, y)
    num_classes = int(y.max()) + 1
    keep = _held_out(len(y), cfg, split)
    return x[keep], y[keep].astype(np.int64), num_classes


def _check_arrays(path, x, y) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(f"dataset=npz path={path}: 'x' must be uint8 [N,H,W,C] with C in (1, 3),"
                           f" got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"dataset=npz path={path}: 'y' must be {len(x)} integer labels,"
                           f" got {y.dtype} {list(y.shape)}")
    if len(y) == 0 or y.min() < 0:
        raise DatasetError(f"dataset=npz path={path}: labels must be >= 0 and at least one image,"
                           f" got min {y.min() if len(y) else 'none'}")


def _imagefolder(cfg, split: str):
    path = _existing_path(cfg)
    try:
        ds = tvd.ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"dataset=imagefolder path={path}: {exc}".splitlines()[0]) from None
    keep = _held_out(len(ds), cfg, split)
    size = cfg.size
    mode = "L" if cfg.channels == 1 else "RGB"
    images = [_image(ds, ds.samples[i][0], mode, size) for i in keep]
    x = np.stack(images) if images else np.zeros((0, size, size), np.uint8)
    return x, np.asarray([ds.targets[i] for i in keep], dtype=np.int64), len(ds.classes)


def _image(ds, file: str, mode: str, size: int) -> np.ndarray:
    try:
        return np.asarray(ds.loader(file).convert(mode).resize((size, size)))
    except OSError as exc:  # PIL's "cannot identify image file", truncated files, permissions
        raise DatasetError(f"dataset=imagefolder: {file} is not a readable image ({exc})".splitlines()[0]) from None


def _existing_path(cfg) -> Path:
    if not cfg.path:
        raise DatasetError(f"dataset={cfg.name}: path is required (dataset={cfg.name} path=...)")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset={cfg.name} path={path}: no such file or folder")
    return path


LOADERS: dict[str, Callable] = {"digits": _digits, **_TV, "npz": _npz, "imagefolder": _imagefolder}
