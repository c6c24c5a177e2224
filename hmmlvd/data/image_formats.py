"""Readers for the on-disk image formats: IDX (MNIST), CIFAR-10 binary and downsampled-ImageNet npz.

Each reader checks the format strictly and raises a ValueError naming the file and the problem. Nothing is
ever unpickled: npz files are opened with ``allow_pickle=False``.
"""
from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
CIFAR_SIDE = 32
CIFAR_RECORD_BYTES = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE
FIX = "replace it with a fresh, complete copy of the official file (or point root= / --data-dir elsewhere)"


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: not a readable gzip file, corrupt or truncated ({error}); {FIX}") from error
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error}); {FIX}") from error


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (plain or ``.gz``) whose header must start with ``magic``.

    ``magic`` is ``IDX_IMAGES_MAGIC`` (3 dimensions, ``[N, H, W]``) or ``IDX_LABELS_MAGIC`` (``[N]``).
    The header is the 4-byte magic then one big-endian 4-byte size per dimension; the file length must match.
    """
    path = Path(path)
    raw = _read_bytes(path)
    num_dims = magic & 0xFF
    header_bytes = 4 + 4 * num_dims
    if len(raw) >= 4 and int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{path}: expected IDX magic 0x{magic:08x}, found {raw[:4].hex()}: not the IDX file "
                         f"expected here; {FIX}")
    if len(raw) < header_bytes:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header_bytes}); {FIX}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(num_dims))
    expected = header_bytes + int(np.prod(shape))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path} is {state}: header says shape {shape} ({expected} bytes), file has {len(raw)}; "
                         f"{FIX}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels uint8 [N])`` of one CIFAR-10 binary batch.

    Each record is 1 label byte (0..9) then 3,072 pixel bytes: the R, G and B planes, each row-major 32×32.
    The official files hold 10,000 records; any positive whole number of records is accepted.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) == 0 or len(raw) % CIFAR_RECORD_BYTES:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records of "
                         f"{CIFAR_RECORD_BYTES} bytes (1 label + 3x32x32 pixels): truncated, or not the binary "
                         f"version (cifar-10-binary.tar.gz); {FIX}")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() > 9:
        raise ValueError(f"{path}: label byte {int(labels.max())} outside 0..9; not a CIFAR-10 binary batch; {FIX}")
    return records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE), labels


def read_imagenet_npz(path: str | os.PathLike, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, side, side], labels int64 [N] in 1..1000)`` of one downsampled-ImageNet batch.

    The npz holds ``data`` uint8 ``[N, 3·side·side]`` (channel-major: R plane, G plane, B plane) and
    ``labels`` (1-based, as in the official files). Opened with ``allow_pickle=False``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"data", "labels"} - set(archive.files)
            if missing:
                raise ValueError(f"{path}: npz lacks {sorted(missing)} (has {archive.files}); {FIX}")
            data, labels = archive["data"], archive["labels"]
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: not a readable npz file, corrupt or truncated ({error}); {FIX}") from error
    except ValueError as error:
        if "allow_pickle" in str(error) or "Object arrays" in str(error):
            raise ValueError(f"{path}: holds pickled object arrays, which are never loaded; "
                             "save `data` as uint8 and `labels` as integers") from error
        raise
    width = 3 * side * side
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise ValueError(f"{path}: `data` must be uint8 [N, {width}] (3x{side}x{side}, channel-major), "
                         f"found {data.dtype} {list(data.shape)}; is it the {side}x{side} ImageNet? {FIX}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        raise ValueError(f"{path}: `labels` must be integers [{len(data)}], found {labels.dtype} {list(labels.shape)}; {FIX}")
    if len(labels) and (labels.min() < 1 or labels.max() > 1000):
        raise ValueError(f"{path}: labels must be 1-based class ids in 1..1000, "
                         f"found {int(labels.min())}..{int(labels.max())}; {FIX}")
    return data.reshape(-1, 3, side, side), labels.astype(np.int64)
