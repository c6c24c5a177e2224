"""Latent variable distillation for the HMM: embed suffixes -> K-means per position -> closed-form HMM."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..distributed import rank_and_world_size, shard
from ..hmm import HMM
from .closed_form import closed_form_hmm
from .kmeans import KMeansConfig, cluster_positions
from .embeddings import EmbeddingStats, embed_windows
from .encoder import SuffixEncoder, check_encoder_dtype


@dataclass(frozen=True)
class DistillConfig:
    """LVD settings. ``num_windows=None`` distills from every training window (a GPU budget).
    ``encoder_dtype`` is the encoder's precision, one of :data:`~hmmlvd.lvd.encoder.ENCODER_DTYPES`.
    ``num_states`` (h, the K-means clusters per position) may be left None when a
    :class:`~hmmlvd.lvd.recipe.RecipeConfig` carries it (the recipe fills it in)."""

    num_states: int | None = None
    num_windows: int | None = None
    encoder: str | None = None
    encoder_batch_size: int = 128
    encoder_dtype: str = "auto"
    kmeans_iterations: int = 20
    pseudocount: float = 0.1
    seed: int = 0
    cache_dir: str | None = None
    kmeans_backend: str = "auto"

    def __post_init__(self) -> None:
        check_encoder_dtype(self.encoder_dtype)
        if self.kmeans_backend not in ("auto", "torch"):
            raise ValueError(f"kmeans_backend must be 'auto' (faiss in one process when installed) or 'torch', "
                             f"got {self.kmeans_backend!r}")
        if self.num_states is not None and self.num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {self.num_states}")
        if self.num_states is not None and self.num_windows is not None and self.num_windows < self.num_states:
            raise ValueError(f"num_windows={self.num_windows} is below num_states={self.num_states}: K-means "
                             "needs at least one suffix per cluster; distill from more windows")
        if self.pseudocount < 0 or self.kmeans_iterations < 1 or self.encoder_batch_size < 1:
            raise ValueError("pseudocount must be >= 0, kmeans_iterations and encoder_batch_size >= 1")


@dataclass
class DistillStats:
    """The cost of each LVD stage."""

    num_windows: int
    embedding: EmbeddingStats
    kmeans_seconds: float
    counting_seconds: float
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"num_windows": self.num_windows, "num_suffixes_computed": self.embedding.num_suffixes_computed,
                "embedding_seconds": self.embedding.seconds,
                "suffixes_per_second": self.embedding.suffixes_per_second,
                "kmeans_seconds": self.kmeans_seconds, "counting_seconds": self.counting_seconds}


def select_windows(num_total: int, num_windows: int | None, seed: int) -> Tensor:
    """A seeded subsample of window ids (sorted); the first n of one permutation, so larger
    subsamples contain smaller ones and share their cached embeddings."""
    if num_windows is None or num_windows >= num_total:
        return torch.arange(num_total)
    order = torch.randperm(num_total, generator=torch.Generator().manual_seed(seed))
    return order[:num_windows].sort().values


def distill(windows: Tensor, tokenizer, config: DistillConfig, data_key: str,
            encoder=None, progress: bool = True) -> tuple[HMM, DistillStats]:
    """The LVD initialisation of a non-homogeneous HMM from training ``windows`` [N, T].

    ``encoder`` is the teacher: a :class:`SuffixEncoder` (built from ``config`` when None) or any object
    with its ``embed_block`` / ``cache_key`` interface, such as
    :class:`~hmmlvd.lvd.causal_lm.HiddenStateTeacher` (a causal LM's own hidden states).

    ``data_key`` identifies the stream the windows come from (for the embedding cache). Under
    ``torch.distributed`` every rank passes all ``windows``; each embeds and counts its own shard of the
    selected windows, K-means runs distributed in torch, and every rank returns the same HMM.
    """
    if windows.dim() != 2 or len(windows) == 0:
        raise ValueError(f"windows must be a non-empty [num_windows, length] tensor, got {tuple(windows.shape)}")
    if config.num_states is None:
        raise ValueError("DistillConfig.num_states is not set: give h as DistillConfig(num_states=...) or "
                         "through RecipeConfig(num_states=...)")
    window_ids = select_windows(len(windows), config.num_windows, config.seed)
    rank, world_size = rank_and_world_size()
    local_ids = shard(window_ids)
    progress = progress and rank == 0
    encoder = encoder or SuffixEncoder(config.encoder, batch_size=config.encoder_batch_size,
                                       dtype=config.encoder_dtype)
    embeddings, embedding_stats = embed_windows(windows, local_ids, tokenizer, encoder, data_key,
                                                cache_dir=config.cache_dir, progress=progress)
    backend = "torch" if world_size > 1 else config.kmeans_backend
    start = time.perf_counter()
    assignments, _ = cluster_positions(
        embeddings, KMeansConfig(config.num_states, config.kmeans_iterations, config.seed, backend=backend),
        keep_centroids=False, progress=progress)
    kmeans_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hmm = closed_form_hmm(windows[local_ids], assignments, config.num_states, tokenizer.vocab_size,
                          pseudocount=config.pseudocount)
    counting_seconds = time.perf_counter() - start
    return hmm, DistillStats(len(window_ids), embedding_stats, kmeans_seconds, counting_seconds)
