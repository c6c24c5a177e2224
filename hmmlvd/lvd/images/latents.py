"""Per-patch latent assignments: K-means per patch position over the features of all training images (paper §5),
or one K-means shared by every position for tied patch circuits, and the nearest learnt centroid for new images."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..clustering import KMeansConfig, kmeans

KMEANS_ITERATIONS = 20
KMEANS_RESTARTS = 5     # the best of five seeded runs, as in the paper's public code (bench/RESULTS.md: k = 4)


def assign_latents(features: Tensor, num_clusters: int, iterations: int = KMEANS_ITERATIONS,
                   restarts: int = KMEANS_RESTARTS, seed: int = 0,
                   use_gpu: bool | None = None, progress: bool = True, shared: bool = False) -> tuple[Tensor, Tensor]:
    """K-means with ``num_clusters`` clusters at every patch position of ``features`` [N, P, d], on every point.

    Returns (Z LongTensor [N, P] with z[n, i] in 0..k-1, centroids float32 [P, k, d]). Position i is clustered
    by :func:`hmmlvd.lvd.clustering.kmeans` (faiss; torch on a GPU; the best of ``restarts`` runs of
    ``iterations`` Lloyd steps) with seed ``seed + i``, as
    :func:`hmmlvd.lvd.clustering.cluster_positions` does; Z[n, i] is the nearest of position i's centroids.
    With ``shared`` one K-means runs over the features of every position together, so cluster c means the same
    at every patch (what a circuit whose patch models are tied across patches needs); its centroids are
    repeated for every position.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [N, P, d], got shape {tuple(features.shape)}")
    config = KMeansConfig(num_clusters, iterations=iterations, seed=seed, restarts=restarts, use_gpu=use_gpu)
    if shared:
        labels, centroids = kmeans(features.reshape(-1, features.shape[2]), config)
        return labels.view(features.shape[:2]), centroids[None].expand(features.shape[1], -1, -1).contiguous()
    assignments = torch.empty(features.shape[:2], dtype=torch.long)
    centroids = torch.empty(features.shape[1], num_clusters, features.shape[2])
    for patch in tqdm(range(features.shape[1]), desc=f"K-means (k={num_clusters}) per patch", unit="patch",
                      disable=not progress):
        assignments[:, patch], centroids[patch] = kmeans(features[:, patch], replace(config, seed=seed + patch))
    return assignments, centroids


def nearest_centroids(features: Tensor, centroids: Tensor, batch_size: int = 8192) -> Tensor:
    """Latents of new images: Z LongTensor [N, P], the index of the nearest (L2) of patch i's centroids
    [P, k, d] to each feature ``features[n, i]`` [N, P, d]."""
    if features.dim() != 3 or centroids.dim() != 3 or features.shape[1:] != (centroids.shape[0], centroids.shape[2]):
        raise ValueError(f"features [N, P, d] and centroids [P, k, d] must agree on P and d, got shapes "
                         f"{tuple(features.shape)} and {tuple(centroids.shape)}")
    centroids = centroids.float()
    norms = (centroids * centroids).sum(2)                                                  # [P, k]
    out = torch.empty(features.shape[:2], dtype=torch.long)
    for start in range(0, len(features), batch_size):
        block = features[start:start + batch_size].float().transpose(0, 1)                 # [P, n, d]
        scores = norms[:, None, :] - 2.0 * torch.bmm(block, centroids.transpose(1, 2))    # ||c||² − 2 x·c
        out[start:start + batch_size] = scores.argmin(2).T
    return out
