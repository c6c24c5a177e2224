"""Per-position K-means of suffix embeddings: faiss (GPU when present), scikit-learn as a fallback."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm


@dataclass(frozen=True)
class KMeansConfig:
    """K-means settings: ``iterations`` Lloyd steps, the best of ``restarts`` seeded runs;
    ``use_gpu=None`` means "if faiss sees a GPU"."""

    num_clusters: int
    iterations: int = 20
    seed: int = 0
    restarts: int = 1
    use_gpu: bool | None = None

    def __post_init__(self) -> None:
        if min(self.num_clusters, self.iterations, self.restarts) < 1:
            raise ValueError(f"num_clusters, iterations and restarts must be >= 1, got {self.num_clusters}, "
                             f"{self.iterations}, {self.restarts}")


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def kmeans(points: Tensor, config: KMeansConfig) -> tuple[Tensor, Tensor]:
    """Cluster ``points`` [n, d]; returns (assignments LongTensor [n], centroids [k, d]).

    Every point is used for training (faiss would otherwise subsample to 256 points per
    centroid). A cluster that ends up empty simply receives no points.
    """
    if points.dim() != 2 or len(points) < config.num_clusters:
        raise ValueError(f"K-means with k={config.num_clusters} needs at least k points [n, d], got shape "
                         f"{tuple(points.shape)}; use more windows (--lvd-windows) or fewer states")
    data = np.ascontiguousarray(points.float().cpu().numpy())
    faiss = _faiss()
    if faiss is None:
        warnings.warn("faiss is not installed; falling back to scikit-learn KMeans (slower). "
                      "pip install faiss-cpu (or faiss-gpu-cu12)", RuntimeWarning, stacklevel=2)
        from sklearn.cluster import KMeans

        model = KMeans(config.num_clusters, n_init=config.restarts, max_iter=config.iterations,
                       random_state=config.seed).fit(data)
        return torch.from_numpy(model.labels_.astype(np.int64)), torch.from_numpy(model.cluster_centers_).float()
    gpu = config.use_gpu if config.use_gpu is not None else faiss.get_num_gpus() > 0
    model = faiss.Kmeans(data.shape[1], config.num_clusters, niter=config.iterations, seed=config.seed,
                         nredo=config.restarts, max_points_per_centroid=max(len(data), 1),
                         min_points_per_centroid=1,
                         gpu=bool(gpu), verbose=False)
    model.train(data)
    _, labels = model.index.search(data, 1)
    return torch.from_numpy(labels[:, 0].astype(np.int64)), torch.from_numpy(model.centroids).float()


def cluster_positions(embeddings: Tensor, config: KMeansConfig, progress: bool = True) -> tuple[Tensor, float]:
    """For each position t of ``embeddings`` [n, T, d], K-means over the n suffix embeddings.

    Returns (assignments LongTensor [n, T], seconds spent).
    """
    if embeddings.dim() != 3:
        raise ValueError(f"embeddings must be [num_windows, length, dim], got shape {tuple(embeddings.shape)}")
    start = time.perf_counter()
    assignments = torch.empty(embeddings.shape[:2], dtype=torch.long)
    for t in tqdm(range(embeddings.shape[1]), desc=f"K-means (k={config.num_clusters}) per position",
                  unit="position", disable=not progress):
        assignments[:, t], _ = kmeans(embeddings[:, t], replace(config, seed=config.seed + t))
    return assignments, time.perf_counter() - start
