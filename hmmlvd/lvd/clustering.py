"""Per-position K-means of suffix embeddings.

Backends, in order of preference: faiss on the GPU; plain torch on a CUDA device (when faiss has no GPU
support, e.g. ``faiss-cpu`` next to a CUDA torch); faiss on the CPU; scikit-learn as the last fallback.
Under ``torch.distributed`` (more than one process) the torch K-means runs distributed: each rank holds
and assigns only its own points, and the per-centroid sums and counts are summed across ranks.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..distributed import broadcast_from, gather_sizes, rank_and_world_size, sum_across_ranks

BACKENDS = ("auto", "torch")


@dataclass(frozen=True)
class KMeansConfig:
    """K-means settings: ``iterations`` Lloyd steps, the best of ``restarts`` seeded runs;
    ``use_gpu=None`` means "on the GPU if there is one", ``False`` forces the CPU. ``backend="torch"``
    always runs :func:`torch_kmeans` (the same result in one process as under torchrun); ``"auto"``
    prefers faiss in a single process."""

    num_clusters: int
    iterations: int = 20
    seed: int = 0
    restarts: int = 1
    use_gpu: bool | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if min(self.num_clusters, self.iterations, self.restarts) < 1:
            raise ValueError(f"num_clusters, iterations and restarts must be >= 1, got {self.num_clusters}, "
                             f"{self.iterations}, {self.restarts}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def kmeans(points: Tensor, config: KMeansConfig) -> tuple[Tensor, Tensor]:
    """Cluster ``points`` [n, d]; returns (assignments LongTensor [n], centroids [k, d]).

    Every point is used for training (faiss would otherwise subsample to 256 points per
    centroid). A cluster that ends up empty simply receives no points. Under ``torch.distributed``
    ``points`` is this rank's part and the labels are those of its points (see :func:`torch_kmeans`).
    """
    torch_device = "cuda" if config.use_gpu is not False and torch.cuda.is_available() else "cpu"
    if config.backend == "torch" or rank_and_world_size()[1] > 1:
        return torch_kmeans(points, config, device=torch_device)
    if points.dim() != 2 or len(points) < config.num_clusters:
        raise ValueError(f"K-means with k={config.num_clusters} needs at least k points [n, d], got shape "
                         f"{tuple(points.shape)}; use more windows (--lvd-windows) or fewer states")
    faiss = _faiss()
    faiss_gpu = faiss is not None and config.use_gpu is not False and faiss.get_num_gpus() > 0
    if not faiss_gpu and torch_device == "cuda":
        return torch_kmeans(points, config, device="cuda")
    data = np.ascontiguousarray(points.float().cpu().numpy())
    if faiss is None:
        warnings.warn("faiss is not installed; falling back to scikit-learn KMeans (slower). "
                      "pip install faiss-cpu (or faiss-gpu on a CUDA 12 machine)", RuntimeWarning, stacklevel=2)
        from sklearn.cluster import KMeans

        model = KMeans(config.num_clusters, n_init=config.restarts, max_iter=config.iterations,
                       random_state=config.seed).fit(data)
        return torch.from_numpy(model.labels_.astype(np.int64)), torch.from_numpy(model.cluster_centers_).float()
    model = faiss.Kmeans(data.shape[1], config.num_clusters, niter=config.iterations, seed=config.seed,
                         nredo=config.restarts, max_points_per_centroid=max(len(data), 1),
                         min_points_per_centroid=1, gpu=faiss_gpu, verbose=False)
    model.train(data)
    _, labels = model.index.search(data, 1)
    return torch.from_numpy(labels[:, 0].astype(np.int64)), torch.from_numpy(model.centroids).float()


def torch_kmeans(points: Tensor, config: KMeansConfig, device: str | torch.device = "cpu",
                 max_block: int = 1 << 26) -> tuple[Tensor, Tensor]:
    """Lloyd's K-means in plain torch on ``device`` (every point used; the best of ``config.restarts`` runs
    from k-means++ seeds). Distances are computed in blocks of at most ``max_block`` point-centroid pairs;
    centroid sums are accumulated in float64. Returns CPU tensors like :func:`kmeans`.

    Under ``torch.distributed`` every rank calls this with its own part of the points [n_rank, d]: the
    seeding draws from one generator on every rank (each draw picks a point on the rank that owns it, which
    broadcasts it), each Lloyd step sums the per-centroid sums and counts across ranks, and the returned
    labels [n_rank] are this rank's. The result equals one process on all the points, up to rounding.
    """
    if points.dim() != 2:
        raise ValueError(f"K-means needs points [n, d], got shape {tuple(points.shape)}")
    k = config.num_clusters
    num_points = int(sum(gather_sizes(len(points))))
    if num_points < k:
        raise ValueError(f"K-means with k={k} needs at least k points [n, d], got {num_points} in all; "
                         "use more windows (--lvd-windows) or fewer states")
    x = points.to(device=device, dtype=torch.float32)
    rows = max(1, max_block // k)
    best = None
    for restart in range(config.restarts):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + restart)
        centroids = _kmeans_plus_plus(x, k, generator)
        for _ in range(config.iterations):
            labels, _ = _nearest(x, centroids, rows)
            sums = torch.zeros(centroids.shape, dtype=torch.float64, device=x.device).index_add_(0, labels, x.double())
            sizes = torch.bincount(labels, minlength=k).double()
            sum_across_ranks([sums, sizes])
            filled = sizes > 0
            centroids[filled] = (sums[filled] / sizes[filled, None]).to(x.dtype)
        labels, distances = _nearest(x, centroids, rows)
        inertia = sum(gather_sizes(distances.double().sum().item()))
        if best is None or inertia < best[0]:
            best = (inertia, labels, centroids)
    return best[1].cpu(), best[2].cpu()


def _kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centroid is a point drawn with probability ∝ squared distance, over the
    points of every rank (the draws come from ``generator``, identical on every rank)."""
    rank = rank_and_world_size()[0]
    centroids = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    sizes = gather_sizes(len(x))
    target = int(torch.randint(int(sum(sizes)), (1,), generator=generator))
    owner, local = _owner(sizes, target)
    if owner == rank:
        centroids[0] = x[int(local)]
    broadcast_from(centroids[0], owner)
    distances = ((x - centroids[0]) ** 2).sum(1)
    for index in range(1, k):
        cumulative = distances.double().cumsum(0)
        totals = gather_sizes(cumulative[-1].item() if len(x) else 0.0)
        target = torch.rand((), generator=generator, dtype=torch.float64).item() * sum(totals)
        owner, local = _owner(totals, target)
        if owner == rank:
            chosen = torch.searchsorted(cumulative, torch.tensor([local], dtype=torch.float64, device=x.device),
                                        right=True).clamp_max(len(x) - 1)
            centroids[index] = x[chosen[0]]
        broadcast_from(centroids[index], owner)
        distances = torch.minimum(distances, ((x - centroids[index]) ** 2).sum(1))
    return centroids


def _owner(weights: list[float], target: float) -> tuple[int, float]:
    """The rank whose slice of ``[0, sum(weights))`` holds ``target``, and ``target`` within that slice
    (the last rank with weight when rounding puts ``target`` at the very end)."""
    offset = 0.0
    for rank, weight in enumerate(weights):
        if target < offset + weight:
            return rank, target - offset
        offset += weight
    last = max(rank for rank, weight in enumerate(weights) if weight > 0)
    return last, target - (offset - weights[last])


def _nearest(x: Tensor, centroids: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """Index of and squared distance to the nearest centroid of every point, ``rows`` points at a time."""
    centroid_norms = (centroids * centroids).sum(1)
    labels, distances = [], []
    for start in range(0, len(x), rows):
        block = x[start:start + rows]
        scores = centroid_norms - 2.0 * block @ centroids.T                     # ||c||² − 2 x·c
        best, index = scores.min(1)
        labels.append(index)
        distances.append((best + (block * block).sum(1)).clamp_min(0))
    return torch.cat(labels), torch.cat(distances)


def cluster_positions(embeddings: Tensor, config: KMeansConfig, progress: bool = True) -> tuple[Tensor, float]:
    """For each position t of ``embeddings`` [n, T, d], K-means over the n suffix embeddings.

    Returns (assignments LongTensor [n, T], seconds spent). Under ``torch.distributed`` ``embeddings`` is
    this rank's part of the windows and the assignments are its rows.
    """
    if embeddings.dim() != 3:
        raise ValueError(f"embeddings must be [num_windows, length, dim], got shape {tuple(embeddings.shape)}")
    start = time.perf_counter()
    assignments = torch.empty(embeddings.shape[:2], dtype=torch.long)
    for t in tqdm(range(embeddings.shape[1]), desc=f"K-means (k={config.num_clusters}) per position",
                  unit="position", disable=not progress or rank_and_world_size()[0] != 0):
        assignments[:, t], _ = kmeans(embeddings[:, t], replace(config, seed=config.seed + t))
    return assignments, time.perf_counter() - start
