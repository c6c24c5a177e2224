"""Loaders for the PC benchmarks: DEBD binary datasets and Fashion-MNIST (IDX files)."""
from __future__ import annotations

import gzip
import lzma
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBD_ENV = "HMMLVD_DEBD"
DEBD_DEFAULT = Path("/work/shared/data/debd")
FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "valid", "test")


def debd_dir(root: str | os.PathLike | None = None) -> Path:
    """The DEBD folder: ``root``, else ``$HMMLVD_DEBD``, else ``/work/shared/data/debd``."""
    return Path(root or os.environ.get(DEBD_ENV) or DEBD_DEFAULT)


def load_debd(name: str, root: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """``{"train", "valid", "test"} -> LongTensor [N, num_variables]`` of 0/1 for DEBD dataset ``name``.

    Reads ``NAME.SPLIT.data`` or ``NAME.SPLIT.data.xz`` (comma-separated 0/1 rows).
    """
    folder = debd_dir(root)
    splits = {}
    for split in SPLITS:
        plain, packed = folder / f"{name}.{split}.data", folder / f"{name}.{split}.data.xz"
        if plain.is_file():
            text = plain.read_text()
        elif packed.is_file():
            with lzma.open(packed, "rt") as handle:
                text = handle.read()
        else:
            raise ValueError(f"DEBD file {packed} (or {plain.name}) not found; pass root= or set ${DEBD_ENV} "
                             "to the folder holding NAME.{train,valid,test}.data[.xz]")
        rows = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
        if not np.isin(rows, (0, 1)).all():
            raise ValueError(f"{name}.{split}: DEBD data must be 0/1")
        splits[split] = torch.from_numpy(rows)
    widths = {split: data.shape[1] for split, data in splits.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"{name}: splits have different numbers of variables {widths}")
    return splits


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    num_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(num_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * num_dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def load_fashion_mnist(root: str | os.PathLike | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """``{"train", "test"} -> (images LongTensor [N, 784] in 0..255, labels LongTensor [N])``.

    Reads the IDX files of Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
    """
    folder = Path(root) if root is not None else FASHION_MNIST_DEFAULT
    result = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
        labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
        if not images_path.is_file() or not labels_path.is_file():
            raise ValueError(f"Fashion-MNIST files not found in {folder}; install the Debian package "
                             "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass root=")
        images = _read_idx(images_path)
        result[split] = (torch.from_numpy(images.reshape(len(images), -1).astype(np.int64)),
                         torch.from_numpy(_read_idx(labels_path).astype(np.int64)))
    return result
