"""Safe, atomic storage: safetensors plus JSON, never pickle.

Every artefact folder (an HMM, a circuit, a language model, ...) holds ``config.json`` with
``model_type`` and ``format_version`` beside its other files; :func:`write_config` and
:func:`read_config` write and check that header, and read the keys written by earlier versions.
"""
from __future__ import annotations

import io
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
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# model_type values written before one convention held, and what they are now
LEGACY_MODEL_TYPES = {"hmmlvd.hmm": "hmm", "hmmlvd.pc.circuit": "circuit"}
CACHE_ENV = "HMMLVD_CACHE"


def cache_folder(kind: str) -> Path:
    """The package's cache folder for ``kind`` (``"embeddings"``, ``"kernels"``, ...): ``$HMMLVD_CACHE/kind``,
    default ``~/.cache/hmmlvd/kind``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hmmlvd") / kind


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
        os.chmod(tmp, _file_mode(path))          # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_png(path: str | os.PathLike, figure, dpi: int = 120) -> None:
    """Save a matplotlib ``figure`` as a PNG at ``path`` atomically (rendered in memory, then
    :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would leave: the old file's, else 0o666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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


def digest_tensors(digest, tensors: dict[str, Tensor]) -> None:
    """Feed every tensor's name, dtype, shape and bytes into the hashlib ``digest``, in name order: the content
    hash of a set of weights, whatever their device or memory layout."""
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def write_config(directory: str | os.PathLike, model_type: str, format_version: int, fields: dict) -> None:
    """Atomically write ``directory/config.json``: ``model_type``, ``format_version`` and ``fields``."""
    reserved = {"model_type", "format_version"} & set(fields)
    if reserved:
        raise ValueError(f"config fields may not override {sorted(reserved)}")
    atomic_write_json(Path(directory) / CONFIG_FILE,
                      {"model_type": model_type, "format_version": format_version, **fields})


def read_model_type(directory: str | os.PathLike) -> tuple[str, dict]:
    """``(model_type, config)`` of an artefact folder; older keys (``format``/``version``) and model_type
    names are translated to the current ones."""
    path = Path(directory) / CONFIG_FILE
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object with a model_type, got {type(config).__name__}")
    if "model_type" not in config and "format" in config:          # circuits written before format_version
        config = {**config, "model_type": config["format"], "format_version": config.get("version")}
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"{path} has no model_type; it was not written by hmmlvd's save_pretrained")
    model_type = LEGACY_MODEL_TYPES.get(model_type, model_type)
    return model_type, {**config, "model_type": model_type}


def read_config(directory: str | os.PathLike, model_types: str | tuple[str, ...], format_version: int) -> dict:
    """The ``config.json`` of ``directory``, checked to describe one of ``model_types`` at ``format_version``."""
    model_types = (model_types,) if isinstance(model_types, str) else model_types
    path = Path(directory) / CONFIG_FILE
    model_type, config = read_model_type(directory)
    if model_type not in model_types:
        raise ValueError(f"{path} is not a saved hmmlvd {' or '.join(model_types)} (its model_type is "
                         f"{model_type!r}); hmmlvd.load(path) opens any hmmlvd model folder")
    if config.get("format_version") != format_version:
        raise ValueError(f"{path} has format_version {config.get('format_version')!r} for model_type "
                         f"{model_type!r}; this hmmlvd reads version {format_version} (a file from a newer "
                         "hmmlvd needs that version to open it)")
    return config
