"""Safe, atomic storage: safetensors plus JSON, never pickle."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _serialize
from torch import Tensor

METADATA_KEY = "hmmlvd"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, turning a missing or malformed file into a clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; expected a JSON file written by hmmlvd")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON (corrupted or truncated?): {error}") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict | None = None) -> None:
    """Atomically save tensors as safetensors, with ``metadata`` stored as JSON in the header."""
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    header = {METADATA_KEY: json.dumps(metadata or {}, sort_keys=True)}
    atomic_write_bytes(path, _serialize(contiguous, metadata=header))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Load a safetensors file written by :func:`save_tensors`; returns ``(tensors, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; expected a .safetensors file written by hmmlvd")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            header = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (corrupted or truncated?): {error}") from None
    try:
        metadata = json.loads(header.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} has a corrupted metadata header: {error}") from None
    return tensors, metadata
