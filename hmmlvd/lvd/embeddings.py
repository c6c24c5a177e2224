"""Suffix embeddings of training windows with an on-disk fp16 cache (safetensors shards).

The cache folder is keyed by what the encoder is (a hash of its config, tokenizer and weights, so a copy
of the same model at another path hits the cache), the data (a hash of the token stream plus the window
length and stride) and holds shards of ``(window_ids, embeddings [m, T, d])``, so a rerun, an interrupted
run, or a run with another number of states reuses what is there. Shards are named by their window ids,
so processes that embed disjoint parts of the windows (one per rank) write one cache that any number of
processes reads.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..io import atomic_write_json, cache_folder, load_tensors, save_tensors
from .text import suffix_texts

FORMAT_VERSION = 2


def default_cache_dir() -> Path:
    return cache_folder("embeddings")


def stream_hash(stream: Tensor) -> str:
    """SHA-256 of a token stream's int64 bytes."""
    return hashlib.sha256(stream.to(torch.long).contiguous().numpy().tobytes()).hexdigest()


@dataclass
class EmbeddingStats:
    """What embedding cost: suffixes computed now (not cached), seconds, suffixes per second."""

    num_windows: int
    num_suffixes_computed: int
    seconds: float

    @property
    def suffixes_per_second(self) -> float | None:
        return self.num_suffixes_computed / self.seconds if self.num_suffixes_computed else None


class EmbeddingCache:
    """Shards of fp16 suffix embeddings in one folder per (encoder, data) key."""

    def __init__(self, root: str | os.PathLike, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.folder = Path(root) / digest
        self.key = key

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors")) if self.folder.is_dir() else []

    def lookup(self, window_ids: Tensor) -> tuple[dict[int, Tensor], Tensor]:
        """Cached rows for ``window_ids`` (id -> [T, d] fp16) and the ids that are missing."""
        wanted = set(window_ids.tolist())
        found: dict[int, Tensor] = {}
        for shard in self._shards():
            ids, embeddings = self._read_shard(shard)
            for row, window_id in enumerate(ids.tolist()):
                if window_id in wanted and window_id not in found:
                    found[window_id] = embeddings[row]
        missing = torch.tensor([i for i in window_ids.tolist() if i not in found], dtype=torch.long)
        return found, missing

    def _read_shard(self, shard: Path) -> tuple[Tensor, Tensor]:
        """``(window_ids [m], embeddings [m, T, d])`` of one shard, or a ValueError saying how to recover."""
        try:
            tensors, _ = load_tensors(shard)
            ids, embeddings = tensors["window_ids"], tensors["embeddings"]
            if ids.dim() != 1 or embeddings.dim() != 3 or len(ids) != len(embeddings):
                raise ValueError(f"window_ids {tuple(ids.shape)} and embeddings {tuple(embeddings.shape)} disagree")
            if not embeddings.is_floating_point() or not bool(torch.isfinite(embeddings).all()):
                raise ValueError("the embeddings are not finite floating-point numbers")
        except (ValueError, KeyError) as error:
            raise ValueError(f"embedding cache shard {shard} is damaged ({error}); delete it and rerun, and the "
                             "missing embeddings are computed again") from None
        return ids, embeddings

    def add(self, window_ids: Tensor, embeddings: Tensor) -> None:
        """Write one shard atomically."""
        if not (self.folder / "key.json").is_file():
            atomic_write_json(self.folder / "key.json", self.key)
        name = hashlib.sha256(window_ids.numpy().tobytes()).hexdigest()[:16]
        save_tensors(self.folder / f"shard-{name}.safetensors",
                     {"window_ids": window_ids.to(torch.long), "embeddings": embeddings.to(torch.float16)},
                     {"format": FORMAT_VERSION})


def embed_windows(windows: Tensor, window_ids: Tensor, tokenizer, encoder, data_key: str,
                  cache_dir: str | os.PathLike | None = None, block_windows: int = 256,
                  progress: bool = True) -> tuple[Tensor, EmbeddingStats]:
    """Embeddings [n, T, d] (fp16) of every position of ``windows[window_ids]`` by the teacher ``encoder``:
    a :class:`~hmmlvd.lvd.encoder.SuffixEncoder` embeds every suffix; any other teacher has
    ``embed_block(windows [m, T], tokenizer, progress) -> [m, T, d]`` and ``cache_key() -> dict``.

    ``data_key`` names the data the window ids index into (e.g. :func:`stream_hash` plus
    the window length and stride). Under ``torch.distributed`` each rank passes its own part of
    the ids (:func:`hmmlvd.distributed.shard`) and writes its part of the cache. Missing windows are computed in blocks of
    ``block_windows`` and cached after each block, so an interrupted run resumes.
    ``cache_dir=False`` disables the cache.
    """
    if window_ids.dim() != 1 or len(window_ids) == 0:
        raise ValueError("window_ids must be a non-empty 1-D tensor of window indices")
    length = windows.shape[1]
    cache = None
    if cache_dir is not False:
        key = {**_teacher_key(encoder), "data": data_key, "format": FORMAT_VERSION}
        cache = EmbeddingCache(cache_dir or default_cache_dir(), key)
    found, missing = cache.lookup(window_ids) if cache is not None else ({}, window_ids)
    bar = tqdm(total=len(missing) * length, desc=f"embedding suffixes ({len(found)} windows cached)",
               unit="suffix", disable=not progress or len(missing) == 0, smoothing=0.1)
    start = time.perf_counter()
    for block in (missing.split(block_windows) if len(missing) else ()):
        embedded = _embed_block(encoder, windows[block], tokenizer, bar).to(torch.float16)
        if cache is not None:
            cache.add(block, embedded)
        found.update(zip(block.tolist(), embedded))
    bar.close()
    stats = EmbeddingStats(len(window_ids), len(missing) * length, time.perf_counter() - start)
    return torch.stack([found[i] for i in window_ids.tolist()]), stats


def _teacher_key(encoder) -> dict:
    """What a teacher's embeddings depend on besides the data: its ``cache_key()``, or a suffix encoder's fields."""
    if hasattr(encoder, "cache_key"):
        return encoder.cache_key()
    return {"encoder": encoder.fingerprint, "precision": encoder.precision, "max_length": encoder.max_length,
            "eos_token": encoder.eos_token}


def _embed_block(encoder, windows: Tensor, tokenizer, bar) -> Tensor:
    """Embeddings [m, T, d] of the windows [m, T]: the teacher's ``embed_block``, or every suffix's embedding."""
    if hasattr(encoder, "embed_block"):
        return encoder.embed_block(windows, tokenizer, bar)
    texts = [suffix_texts(row, tokenizer, encoder.unk_token, encoder.eos_token) for row in windows.tolist()]
    return encoder.embed_token_ids(encoder.suffix_token_ids(texts), progress=bar).view(*windows.shape, -1)
