"""Image datasets as uint8 tensors ``[N, C, H, W]`` with int64 labels: one entry point, ``load_images``.

Where the files are looked for, in order: the ``root`` argument, then the dataset's environment variable
(``IMAGE_DIR_ENV``), then, for Fashion-MNIST only, the folder of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``). The first of these that is given is used; a missing file is a
ValueError naming every expected file, the folder searched and how to point the loader elsewhere.

Splits are the official ``train`` and ``test``; ``train_valid_split`` cuts a validation set off the end of
``train``. Downsampled ImageNet has no public test labels, so its ``test`` is the official ``val_data.npz``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .image_formats import FIX, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_cifar_batch, read_idx, read_imagenet_npz

IMAGE_DATASETS = ("fashion-mnist", "mnist", "cifar10", "imagenet32", "imagenet64", "digits")
IMAGE_SPLITS = ("train", "test")
IMAGE_DIR_ENV = {"fashion-mnist": "HMMLVD_FASHION_MNIST", "mnist": "HMMLVD_MNIST", "cifar10": "HMMLVD_CIFAR10",
                 "imagenet32": "HMMLVD_IMAGENET32", "imagenet64": "HMMLVD_IMAGENET64"}
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")   # Debian package dataset-fashion-mnist
DIGITS_TRAIN_SIZE = 1500          # sklearn's 1,797 digits: the first 1,500 train, the last 297 test
DIGITS_LEVELS = 17                # sklearn's digits take the values 0..16, kept as they are
DEFAULT_VALID_SIZE = 5000


@dataclass(frozen=True)
class ImageSet:
    """A split of an image dataset: ``images`` uint8 [N, C, H, W] with values in 0..num_categories-1,
    ``labels`` int64 [N] (class ids from 0)."""

    name: str
    images: Tensor
    labels: Tensor
    num_categories: int

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                             f"{list(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(f"{self.name}: labels must be int64 [{len(self.images)}], got {self.labels.dtype} "
                             f"{list(self.labels.shape)}")
        if not 2 <= self.num_categories <= 256:
            raise ValueError(f"{self.name}: num_categories must be in 2..256, got {self.num_categories}")

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.images.shape[2], self.images.shape[3]

    def __len__(self) -> int:
        return len(self.images)


def load_images(name: str, root: str | os.PathLike | None = None, split: str = "train") -> ImageSet:
    """The official ``split`` (``train`` or ``test``) of image dataset ``name`` (one of ``IMAGE_DATASETS``).

    - ``fashion-mnist``, ``mnist``: IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, 1×28×28.
    - ``cifar10``: the binary version, ``data_batch_1..5.bin`` and ``test_batch.bin`` (also found in a
      ``cifar-10-batches-bin`` subfolder), 3×32×32.
    - ``imagenet32``, ``imagenet64``: ``train_data_batch_1..10.npz`` and ``val_data.npz`` (the ``test`` split),
      3×H×W; the files' 1-based labels are returned 0-based (0..999).
    - ``digits``: scikit-learn's 8×8 digits, 1×8×8 with the original 17 grey levels 0..16
      (``num_categories`` 17, not rescaled); no files, so ``root`` must be None.
    """
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}; choose one of {IMAGE_DATASETS}")
    if split not in IMAGE_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {IMAGE_SPLITS} "
                         "(train_valid_split cuts a validation set off train)")
    if name == "digits":
        if root is not None:
            raise ValueError("digits ship with scikit-learn and are read from there; pass root=None")
        return _digits(split)
    folder = image_dir(name, root)
    if name in ("fashion-mnist", "mnist"):
        return _idx_set(name, folder, split)
    if name == "cifar10":
        return _cifar_set(folder, split)
    return _imagenet_set(name, folder, split)


def image_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder searched for ``name``: ``root``, else ``$HMMLVD_<NAME>``, else (Fashion-MNIST) Debian's."""
    folder = root or os.environ.get(IMAGE_DIR_ENV[name])
    if folder:
        return Path(folder)
    if name == "fashion-mnist":
        return FASHION_MNIST_DEBIAN_DIR
    raise ValueError(f"no folder given for {name}: pass root= (or --data-dir) or set ${IMAGE_DIR_ENV[name]} to the "
                     f"folder holding {', '.join(expected_files(name, 'train') + expected_files(name, 'test'))}")


def expected_files(name: str, split: str) -> list[str]:
    """The file names ``load_images`` reads for ``split`` (IDX files may also end in ``.gz``)."""
    if name in ("fashion-mnist", "mnist"):
        prefix = "train" if split == "train" else "t10k"
        return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    if name == "cifar10":
        return [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    if name in ("imagenet32", "imagenet64"):
        return [f"train_data_batch_{i}.npz" for i in range(1, 11)] if split == "train" else ["val_data.npz"]
    raise ValueError(f"{name!r} is not read from files")


def train_valid_split(images: ImageSet, valid_size: int = DEFAULT_VALID_SIZE) -> tuple[ImageSet, ImageSet]:
    """``(train, valid)``: the last ``valid_size`` images of ``images`` are the validation set (deterministic)."""
    if not 0 < valid_size < len(images):
        raise ValueError(f"valid_size must be in 1..{len(images) - 1} for {len(images)} images, got {valid_size}")
    cut = len(images) - valid_size
    return (ImageSet(images.name, images.images[:cut], images.labels[:cut], images.num_categories),
            ImageSet(images.name, images.images[cut:], images.labels[cut:], images.num_categories))


def _find(name: str, folder: Path, split: str, suffixes: tuple[str, ...] = ("",)) -> list[Path]:
    files = expected_files(name, split)
    found, missing = [], []
    for file in files:
        candidates = [folder / (file + suffix) for suffix in suffixes]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        (found if path else missing).append(path or file)
    if missing:
        hint = " or install the Debian package dataset-fashion-mnist" if name == "fashion-mnist" else ""
        either = " (plain or .gz)" if len(suffixes) > 1 else ""
        raise ValueError(f"{name} {split}: expected {', '.join(files)}{either} in {folder}, missing "
                         f"{', '.join(map(str, missing))}; pass root= (or --data-dir) or set "
                         f"${IMAGE_DIR_ENV[name]} to the folder holding them{hint}")
    return found


def _idx_set(name: str, folder: Path, split: str) -> ImageSet:
    images_path, labels_path = _find(name, folder, split, suffixes=(".gz", ""))
    images, labels = read_idx(images_path, IDX_IMAGES_MAGIC), read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: {name} images must be 28x28, found {images.shape[1]}x{images.shape[2]}; "
                         f"{FIX}")
    if len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels for {len(images)} images in {images_path}: the two "
                         f"files are from different releases or one is cut short; {FIX}")
    return _image_set(name, images[:, None], labels)


def _cifar_set(folder: Path, split: str) -> ImageSet:
    nested = folder / "cifar-10-batches-bin"
    if not (folder / expected_files("cifar10", split)[0]).is_file() and nested.is_dir():
        folder = nested
    batches = [read_cifar_batch(path) for path in _find("cifar10", folder, split)]
    return _image_set("cifar10", np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


def _imagenet_set(name: str, folder: Path, split: str) -> ImageSet:
    side = 32 if name == "imagenet32" else 64
    batches = [read_imagenet_npz(path, side) for path in _find(name, folder, split)]
    labels = np.concatenate([b[1] for b in batches]) - 1
    return _image_set(name, np.concatenate([b[0] for b in batches]), labels)


def _digits(split: str) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]
    part = slice(None, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    return ImageSet("digits", torch.from_numpy(images[part].copy()),
                    torch.from_numpy(digits.target[part].astype(np.int64)), DIGITS_LEVELS)


def _image_set(name: str, images: np.ndarray, labels: np.ndarray) -> ImageSet:
    """Copies only where needed (read-only IDX buffers); concatenated batches are wrapped as they are."""
    return ImageSet(name, torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),
                    torch.from_numpy(np.require(labels, np.int64, ["C", "W"])), 256)
