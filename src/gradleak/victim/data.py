"""Real image datasets as in-memory tensors: images float in [0, 1], shape [N, C, H, W].

Each dataset loads one split ("train" or "test"). torchvision datasets download into
`data_dir` when online; when their files are missing and cannot be fetched, loading fails
with one line naming the folder and the files expected.
"""
import socket
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
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
        folders_before = _folders(root)
        try:
            return self.factory(root, split, download=True)
        except Exception as exc:  # noqa: BLE001 - any download failure means "not available"
            _remove_new_empty_folders(root, folders_before)
            raise DatasetError(
                f"dataset={name}: files not found in {root} (expected {self.expected.format(root=root)})"
                f" and download failed ({type(exc).__name__}); set data_dir=... to a folder that"
                f" has them, or use dataset=digits (bundled, no network)") from None
        finally:
            socket.setdefaulttimeout(previous)


def _folders(root: Path) -> set[Path]:
    return {root, *(p for p in root.rglob("*") if p.is_dir())} if root.exists() else set()


def _remove_new_empty_folders(root: Path, before: set[Path]) -> None:
    """A failed download leaves the folders torchvision made for it; take the empty ones back."""
    for folder in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


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


def _train_flag(dataset_class) -> Callable:
    """Factory for the torchvision classes that pick their split with train=True/False."""
    return lambda root, split, download: dataset_class(str(root), train=split == "train", download=download)


_TV = {
    "mnist": TorchvisionSource(_train_flag(tvd.MNIST),
                               "{root}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"),
    "fashionmnist": TorchvisionSource(_train_flag(tvd.FashionMNIST),
                                      "{root}/FashionMNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"),
    "cifar10": TorchvisionSource(_train_flag(tvd.CIFAR10), "{root}/cifar-10-batches-py/{{data_batch_1..5,test_batch}}"),
    "cifar100": TorchvisionSource(_train_flag(tvd.CIFAR100), "{root}/cifar-100-python/{{train,test,meta}}"),
    "svhn": TorchvisionSource(_svhn, "{root}/svhn/{{train,test}}_32x32.mat"),
    "lfw": TorchvisionSource(_LFWPeople, "{root}/lfw-py/lfw_funneled/ and peopleDev{{Train,Test}}.txt"),
}


# --- the user's own images -------------------------------------------------------------------

def _held_out(n: int, cfg, split: str) -> np.ndarray:
    """Deterministic split of a user dataset: the last `test_fraction` of a seeded shuffle.
    test_fraction=1.0 makes every image a target (attack only: nothing left to train on)."""
    n_test = int(round(cfg.test_fraction * n))
    order = np.random.default_rng(0).permutation(n)
    keep = order[n - n_test:] if split == "test" else order[: n - n_test]
    if len(keep) == 0:
        raise DatasetError(f"dataset={cfg.name} path={cfg.path}: test_fraction={cfg.test_fraction} of"
                           f" {n} images leaves no {split} images; allowed 0 < test_fraction"
                           f"{' < 1 to train' if split == 'train' else ' <= 1'}")
    return keep


def _npz(cfg, split: str):
    path = _existing_path(cfg, want_folder=False)
    try:
        path.open("rb").close()  # is_zipfile would call an unreadable file "not an archive"
    except OSError as exc:
        raise DatasetError(f"dataset=npz path={path}: not a readable .npz file ({exc})") from None
    if not zipfile.is_zipfile(path):  # np.load would take it for a .npy or a pickle
        raise DatasetError(f"dataset=npz path={path}: not an .npz archive (numpy.savez(path, x=..., y=...)"
                           " writes one)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x", "y", "class_names") if k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # unreadable or corrupt
        raise DatasetError(f"dataset=npz path={path}: not a readable .npz file ({exc})".splitlines()[0]) from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DatasetError(f"dataset=npz path={path}: no array {' or '.join(map(repr, missing))};"
                           " expected 'x' uint8 [N,H,W,C] and 'y' int labels")
    x, y, names = arrays["x"], arrays["y"], arrays.get("class_names")
    _check_arrays(path, x, y)
    # class_names fixes the label space: a subset need not contain the highest class.
    num_classes = len(names) if names is not None else int(y.max()) + 1
    if y.min() < 0 or y.max() >= num_classes:
        space = f"{num_classes} class_names" if names is not None else "no class_names"
        raise DatasetError(f"dataset=npz path={path}: labels must lie in [0, {num_classes})"
                           f" ({space}), got min {y.min()} max {y.max()}")
    keep = _held_out(len(y), cfg, split)
    return x[keep].transpose(0, 3, 1, 2), y[keep].astype(np.int64), num_classes


def _check_arrays(path, x, y) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(f"dataset=npz path={path}: 'x' must be uint8 [N,H,W,C] with C in (1, 3),"
                           f" got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"dataset=npz path={path}: 'y' must be {len(x)} integer labels,"
                           f" got {y.dtype} {list(y.shape)}")
    if len(y) == 0:
        raise DatasetError(f"dataset=npz path={path}: no images")


def _imagefolder(cfg, split: str):
    path = _existing_path(cfg, want_folder=True)
    if cfg.channels not in (1, 3):
        raise DatasetError(f"dataset=imagefolder channels={cfg.channels}: allowed: 1, 3")
    try:
        ds = tvd.ImageFolder(str(path))
    except FileNotFoundError as exc:  # no class folders, or no image files in them
        raise DatasetError(f"dataset=imagefolder path={path}: no images in <class>/<image> layout"
                           f" ({exc})") from None
    keep = _held_out(len(ds), cfg, split)
    x = np.stack([_read_image(path, ds.samples[i][0], cfg) for i in keep])
    return x, np.asarray([ds.targets[i] for i in keep], dtype=np.int64), len(ds.classes)


def _read_image(root: Path, file: str, cfg) -> np.ndarray:
    """One image as uint8 [C, size, size]."""
    try:
        with Image.open(file) as img:
            img = img.convert("L" if cfg.channels == 1 else "RGB").resize((cfg.size, cfg.size))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"dataset=imagefolder path={root}: cannot read image {file}"
                           f" ({type(exc).__name__})") from None
    pixels = np.asarray(img)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _existing_path(cfg, want_folder: bool) -> Path:
    if not cfg.path:
        raise DatasetError(f"dataset={cfg.name}: path is required (dataset={cfg.name} path=...)")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset={cfg.name} path={path}: no such file or folder")
    if path.is_dir() != want_folder:
        kind = "a folder of class folders" if want_folder else "an .npz file"
        raise DatasetError(f"dataset={cfg.name} path={path}: expected {kind}")
    return path


LOADERS: dict[str, Callable] = {"digits": _digits, **_TV, "npz": _npz, "imagefolder": _imagefolder}
