"""DEBD binary density-estimation datasets: ``NAME.{train,valid,test}.data[.xz]`` of comma-separated 0/1 rows."""
from __future__ import annotations

import lzma
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBD_ENV = "HMMLVD_DEBD"
DEBD_SPLITS = ("train", "valid", "test")


def debd_dir(root: str | os.PathLike | None = None) -> Path:
    """The DEBD folder: ``root``, else ``$HMMLVD_DEBD``; a ValueError when neither is given."""
    folder = root or os.environ.get(DEBD_ENV)
    if not folder:
        raise ValueError(f"no DEBD folder given: pass root= (or --root) or set ${DEBD_ENV} to the folder "
                         "holding NAME.{train,valid,test}.data[.xz]")
    return Path(folder)


def load_debd(name: str, root: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """``{"train", "valid", "test"} -> LongTensor [N, num_variables]`` of 0/1 for DEBD dataset ``name``.

    Reads ``NAME.SPLIT.data`` or ``NAME.SPLIT.data.xz`` from ``root`` or ``$HMMLVD_DEBD``.
    """
    folder = debd_dir(root)
    splits = {}
    for split in DEBD_SPLITS:
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
