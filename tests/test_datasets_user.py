"""dataset=npz and dataset=imagefolder: the shared real images load, bad input fails clearly."""
import hashlib
import re

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from gradleak.victim.data import DatasetError, load_split

pytestmark = pytest.mark.fast

LFW = "subsets/lfw_people70_first10/lfw"
CIFAR100 = "subsets/cifar100_test_first20.npz"


def npz_cfg(path, test_fraction=0.2):
    return OmegaConf.create({"name": "npz", "path": None if path is None else str(path),
                             "test_fraction": test_fraction})


def folder_cfg(path, channels=3, size=32):
    return OmegaConf.create({"name": "imagefolder", "path": str(path), "size": size,
                             "channels": channels, "test_fraction": 0.2})


def both_splits(cfg):
    return load_split(cfg, "train"), load_split(cfg, "test")


def as_uint8_hwc(images):
    return (images * 255).round().byte().permute(0, 2, 3, 1).numpy()


def digest(pixels: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# --- the shared real images --------------------------------------------------------------------

def test_npz_loads_the_cifar100_subset(shared_data):
    with np.load(shared_data / CIFAR100) as f:
        x, y = f["x"], f["y"]
    train, test = both_splits(npz_cfg(shared_data / CIFAR100))
    assert (len(train), len(test)) == (16, 4)
    assert train.shape == (3, 32, 32)
    # 100 classes from class_names, though the 20 images' highest label is 97.
    assert train.num_classes == test.num_classes == 100 and y.max() == 97
    loaded = {digest(img): int(label) for split in (train, test)
              for img, label in zip(as_uint8_hwc(split.images), split.labels)}
    assert loaded == {digest(img): int(label) for img, label in zip(x, y)}


def test_imagefolder_loads_the_lfw_photos(shared_data):
    root = shared_data / LFW
    train, test = both_splits(folder_cfg(root))
    assert (len(train), len(test)) == (56, 14)
    assert train.shape == (3, 32, 32) and train.num_classes == 7
    people = sorted(p.name for p in root.iterdir())
    expected = {digest(np.asarray(Image.open(f).convert("RGB").resize((32, 32)))): people.index(f.parent.name)
                for f in root.glob("*/*.jpg")}
    loaded = {digest(img): int(label) for split in (train, test)
              for img, label in zip(as_uint8_hwc(split.images), split.labels)}
    assert len(expected) == 70 and loaded == expected


def test_imagefolder_grayscale(shared_data):
    test = load_split(folder_cfg(shared_data / LFW, channels=1, size=24), "test")
    assert tuple(test.images.shape) == (14, 1, 24, 24)
    assert 0 <= test.images.min() < 0.1 and 0.9 < test.images.max() <= 1


# --- bad input: one clear line each --------------------------------------------------------------

def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def images(n, shape=(8, 8, 3)):
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def error_of(cfg, split="train") -> str:
    with pytest.raises(DatasetError) as info:
        load_split(cfg, split)
    return str(info.value)


def test_missing_path():
    assert error_of(npz_cfg(None)) == "dataset=npz: path is required (dataset=npz path=...)"


def test_path_that_does_not_exist(tmp_path):
    assert error_of(folder_cfg(tmp_path / "nope")) == \
        f"dataset=imagefolder path={tmp_path / 'nope'}: no such file or folder"


def test_empty_folder(tmp_path):
    assert error_of(folder_cfg(tmp_path)) == (
        f"dataset=imagefolder path={tmp_path}: no images in <class>/<image> layout"
        f" (Couldn't find any class folder in {tmp_path}.)")


def test_class_folders_without_images(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    assert error_of(folder_cfg(tmp_path)).startswith(
        f"dataset=imagefolder path={tmp_path}: no images in <class>/<image> layout"
        " (Found no valid file for the classes alice.")


def test_unreadable_image(tmp_path):
    for person in ("alice", "bob"):
        (tmp_path / person).mkdir()
        for i in range(3):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetError) as info:
        load_split(folder_cfg(tmp_path), "train")
    assert re.fullmatch(rf"dataset=imagefolder path={tmp_path}: cannot read image"
                        rf" {tmp_path}/(alice|bob)/[0-2]\.jpg \(UnidentifiedImageError\)", str(info.value))


def test_wrong_image_shape(tmp_path):
    path = save_npz(tmp_path / "gray.npz", x=images(5, (8, 8)), y=np.arange(5))
    assert error_of(npz_cfg(path)) == (
        f"dataset=npz path={path}: 'x' must be uint8 [N,H,W,C] with C in (1, 3), got uint8 [5, 8, 8]")


def test_float_images(tmp_path):
    path = save_npz(tmp_path / "float.npz", x=images(5).astype(np.float32) / 255, y=np.arange(5))
    assert error_of(npz_cfg(path)) == (f"dataset=npz path={path}: 'x' must be uint8 [N,H,W,C]"
                                       " with C in (1, 3), got float32 [5, 8, 8, 3]")


def test_labels_do_not_match_images(tmp_path):
    path = save_npz(tmp_path / "short.npz", x=images(5), y=np.arange(4))
    assert error_of(npz_cfg(path)) == f"dataset=npz path={path}: 'y' must be 5 integer labels, got int64 [4]"


def test_labels_out_of_range(tmp_path):
    path = save_npz(tmp_path / "range.npz", x=images(5), y=np.array([0, 1, 2, 3, 4]),
                    class_names=np.array(["a", "b", "c"]))
    assert error_of(npz_cfg(path)) == (
        f"dataset=npz path={path}: labels must lie in [0, 3) (3 class_names), got min 0 max 4")


def test_negative_labels(tmp_path):
    path = save_npz(tmp_path / "negative.npz", x=images(5), y=np.array([0, 1, -1, 1, 0]))
    assert error_of(npz_cfg(path)) == (
        f"dataset=npz path={path}: labels must lie in [0, 2) (no class_names), got min -1 max 1")


def test_missing_array(tmp_path):
    path = save_npz(tmp_path / "nolabels.npz", x=images(5))
    assert error_of(npz_cfg(path)) == (f"dataset=npz path={path}: no array 'y'; expected 'x' uint8"
                                       " [N,H,W,C] and 'y' int labels")


@pytest.mark.parametrize("content", [b"hello", b"\x93NUMPY"])  # text; a .npy renamed .npz
def test_not_an_npz_archive(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    assert error_of(npz_cfg(path)) == (f"dataset=npz path={path}: not an .npz archive"
                                       " (numpy.savez(path, x=..., y=...) writes one)")


def test_object_arrays_are_refused(tmp_path):
    path = save_npz(tmp_path / "objects.npz", x=np.array([object()] * 5), y=np.arange(5))
    assert error_of(npz_cfg(path)).startswith(f"dataset=npz path={path}: not a readable .npz file"
                                              " (Object arrays cannot be loaded when allow_pickle=False")


def test_folder_given_for_npz_and_file_for_imagefolder(tmp_path):
    (tmp_path / "f.npz").write_text("")
    assert error_of(npz_cfg(tmp_path)) == f"dataset=npz path={tmp_path}: expected an .npz file"
    assert error_of(folder_cfg(tmp_path / "f.npz")) == \
        f"dataset=imagefolder path={tmp_path / 'f.npz'}: expected a folder of class folders"


def test_too_few_images_to_split(tmp_path):
    path = save_npz(tmp_path / "two.npz", x=images(2), y=np.array([0, 1]))
    assert error_of(npz_cfg(path), split="test") == (
        f"dataset=npz path={path}: test_fraction=0.2 of 2 images leaves no test images;"
        " allowed 0 < test_fraction <= 1")


def test_every_image_a_target_leaves_nothing_to_train(tmp_path):
    path = save_npz(tmp_path / "two.npz", x=images(2), y=np.array([0, 1]))
    cfg = npz_cfg(path, test_fraction=1.0)
    assert len(load_split(cfg, "test")) == 2
    assert error_of(cfg, split="train") == (
        f"dataset=npz path={path}: test_fraction=1.0 of 2 images leaves no train images;"
        " allowed 0 < test_fraction < 1 to train")


def test_channels_must_be_one_or_three(tmp_path, shared_data):
    assert error_of(folder_cfg(shared_data / LFW, channels=2)) == \
        "dataset=imagefolder channels=2: allowed: 1, 3"
