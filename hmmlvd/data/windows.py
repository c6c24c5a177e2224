"""Fixed-length windows over a token stream, as views (no copy of the stream)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MISSING = -1


def _check_stream(stream: Tensor, length: int, stride: int) -> None:
    if not isinstance(stream, Tensor) or stream.dim() != 1 or stream.dtype != torch.long:
        raise ValueError("stream must be a 1-D LongTensor of token ids")
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got length={length}, stride={stride}")


def windows(stream: Tensor, length: int = 32, stride: int = 32) -> Tensor:
    """All full windows ``stream[i*stride : i*stride + length]`` as a [N, length] view.

    Stride ``length`` gives disjoint chunks, stride 1 every sliding window. A tail shorter
    than ``length`` is left out (see :func:`chunk_windows` for a padded last chunk).
    """
    _check_stream(stream, length, stride)
    if len(stream) < length:
        return stream.new_empty((0, length))
    return stream.unfold(0, length, stride)


def num_windows(num_tokens: int, length: int = 32, stride: int = 32) -> int:
    return 0 if num_tokens < length else (num_tokens - length) // stride + 1


def chunk_windows(stream: Tensor, length: int = 32) -> Tensor:
    """Disjoint windows covering every token; the last one is padded with ``MISSING`` (-1).

    The full chunks are a view; only when a tail exists is a copy made (one per call).
    """
    _check_stream(stream, length, length)
    full = windows(stream, length, length)
    tail = len(stream) - full.shape[0] * length
    if tail == 0:
        return full
    last = torch.full((1, length), MISSING, dtype=torch.long)
    last[0, :tail] = stream[len(stream) - tail:]
    return torch.cat([full, last])


@dataclass(frozen=True)
class WindowSplits:
    """Fixed-length sequences in any tokenizer, split three ways: ``train`` [N, T], ``valid`` [M, T] and
    ``test`` [K, T] LongTensors (for instance a causal LM's samples), with the ``tokenizer`` they are in.

    The text recipe takes it where it takes a corpus of token streams; ``key`` names the data for caches.
    """

    train: Tensor
    valid: Tensor
    test: Tensor
    tokenizer: object
    key: str
    source: str = "windows"

    def __post_init__(self) -> None:
        length = None
        for name in ("train", "valid", "test"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.dim() != 2 or value.dtype != torch.long or len(value) == 0:
                raise ValueError(f"WindowSplits.{name} must be a non-empty [N, T] LongTensor of token ids")
            if length is not None and value.shape[1] != length:
                raise ValueError(f"every split needs windows of one length; {name} has {value.shape[1]}, not {length}")
            length = value.shape[1]

    @property
    def seq_len(self) -> int:
        return self.train.shape[1]

    def split(self, name: str) -> Tensor:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {name!r}")
        return getattr(self, name)
