"""The one K-means of hmmlvd, for text and images: per position of features [N, T, d] (T token positions of
suffix embeddings, or T image patches of teacher features), or one K-means shared by every position, and the
nearest learnt centroid for new points.

Backends, in order of preference: faiss on the GPU; plain torch on a CUDA device (when faiss has no GPU
support, e.g. ``faiss-cpu`` next to a CUDA torch); faiss on the CPU; scikit-learn as the last fallback.
Under ``torch.distributed`` (more than one process) the torch K-means runs distributed: each rank holds
and assigns only its own points, and the per-centroid sums and counts are summed across ranks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..distributed import broadcast_from, gather_sizes, rank_and_world_size, sum_across_ranks

BACKENDS = ("auto", "torch")
KMEANS_ITERATIONS = 20
KMEANS_RESTARTS = 5     # images: the best of five seeded runs, as in the paper's public code (bench/RESULTS.md: k = 4)
MAX_BLOCK = 1 << 26     # point-centroid pairs per distance block


@dataclass(frozen=True)
class KMeansConfig:
    """K-means settings: ``iterations`` Lloyd steps, the best of ``restarts`` seeded runs;
    ``use_gpu=None`` means "on the GPU if there is one", ``False`` forces the CPU. ``backend="torch"``
    always runs :func:`torch_kmeans` (the same result in one process as under torchrun); ``"auto"``
    prefers faiss in a single process."""

    num_clusters: int
    iterations: int = KMEANS_ITERATIONS
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
                         f"{tuple(points.shape)}; use more points (windows, images) or fewer clusters")
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
                 max_block: int = MAX_BLOCK) -> tuple[Tensor, Tensor]:
    """Lloyd's K-means in plain torch on ``device`` (every point used; the best of ``config.restarts`` runs
    from k-means++ seeds). Distances are computed in blocks of at most ``max_block`` point-centroid pairs;
    centroid sums are accumulated in float64. Returns CPU tensors like :func:`kmeans`: (assignments
    LongTensor [n], centroids float32 [k, d]).

    Under ``torch.distributed`` every rank calls this with its own part of the points [n_rank, d]: the
    seeding draws from one generator on every rank (each draw picks a point on the rank that owns it, which
    broadcasts it), each Lloyd step sums the per-centroid sums and counts across ranks, the best restart is the
    one of least inertia summed across ranks, and the returned labels [n_rank] are this rank's. The result
    equals one process on all the points, up to rounding.
    """
    if points.dim() != 2:
        raise ValueError(f"K-means needs points [n, d], got shape {tuple(points.shape)}")
    num_points = int(sum(gather_sizes(len(points))))
    if num_points < config.num_clusters:
        raise ValueError(f"K-means with k={config.num_clusters} needs at least k points [n, d], got {num_points} "
                         "in all; use more points (windows, images) or fewer clusters")
    x = points.to(device=device, dtype=torch.float32)
    best = None
    for restart in range(config.restarts):
        inertia, labels, centroids = _lloyd(x, config, restart, max_block)
        if best is None or inertia < best[0]:
            best = (inertia, labels, centroids)
    return best[1].cpu(), best[2].cpu()


def _lloyd(x: Tensor, config: KMeansConfig, restart: int, max_block: int) -> tuple[float, Tensor, Tensor]:
    """Run ``restart`` of :func:`torch_kmeans` on this rank's points ``x`` float32 [n, d]: k-means++ seeds from
    seed ``config.seed * 1_000_003 + restart``, then ``config.iterations`` Lloyd steps. Returns (inertia summed
    over every rank's points, labels LongTensor [n], centroids [k, d]), on ``x``'s device."""
    k = config.num_clusters
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + restart)
    centroids = _kmeans_plus_plus(x, k, generator)
    for _ in range(config.iterations):
        labels = _nearest(x, centroids, max_block)[0]
        sums = torch.zeros(centroids.shape, dtype=torch.float64, device=x.device).index_add_(0, labels, x.double())
        sizes = torch.bincount(labels, minlength=k).double()
        sum_across_ranks([sums, sizes])
        filled = sizes > 0
        centroids[filled] = (sums[filled] / sizes[filled, None]).to(x.dtype)
    labels, distances = _nearest(x, centroids, max_block)
    return sum(gather_sizes(distances.double().sum().item())), labels, centroids


def _nearest(x: Tensor, centroids: Tensor, max_block: int) -> tuple[Tensor, Tensor]:
    """:func:`nearest_centroids` of points ``x`` [n, d] among ``centroids`` [k, d]: ([n], [n])."""
    labels, distances = nearest_centroids(x[:, None], centroids[None], max_block)
    return labels[:, 0], distances[:, 0]


def _kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centroid is a point drawn with probability ∝ squared distance, over the
    points of every rank (the draws come from ``generator``, identical on every rank). Fewer distinct points
    than k repeat the last centroid, which then keeps no points. Returns centroids [k, d]."""
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
        if sum(totals) == 0:            # every point is a centroid already: the extra ones stay empty clusters
            centroids[index] = centroids[index - 1]
            continue
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


def cluster_positions(features: Tensor, config: KMeansConfig | int, *, shared: bool = False,
                      keep_centroids: bool = True, progress: bool = True, **settings) -> tuple[Tensor, Tensor | None]:
    """K-means at every position of ``features`` [N, T, d]: N points (windows, images) at each of T positions
    (token positions of suffix embeddings, or image patches).

    ``config`` is a :class:`KMeansConfig`, or the number of clusters k with the other fields of one as keywords
    (``iterations``, ``seed``, ``restarts``, ``use_gpu``, ``backend``). Position t is clustered by :func:`kmeans`
    over its N points with seed ``config.seed + t``. With ``shared`` one K-means (seed ``config.seed``) runs over
    the N·T points of every position together, so cluster c means the same at every position (what patch
    circuits tied across patches need); its centroids are repeated for every position.

    Returns (Z LongTensor [N, T] with Z[n, t] in 0..k-1, centroids float32 [T, k, d], or None without
    ``keep_centroids``). Under ``torch.distributed`` (the torch backend) ``features`` is this rank's shard of
    the N points, Z holds its rows, and the centroids are those of one process on all the points.
    """
    if isinstance(config, int):
        config = KMeansConfig(config, **settings)
    elif settings:
        raise TypeError(f"pass either a KMeansConfig or a number of clusters with settings, got both "
                        f"(extra settings {sorted(settings)})")
    if features.dim() != 3:
        raise ValueError(f"features must be [N, T, d] (N points at each of T positions), got shape "
                         f"{tuple(features.shape)}")
    count, positions, dim = features.shape
    if shared:
        labels, centroids = kmeans(features.reshape(-1, dim), config)
        repeated = centroids[None].expand(positions, -1, -1).contiguous() if keep_centroids else None
        return labels.view(count, positions), repeated
    assignments = torch.empty(count, positions, dtype=torch.long)
    centroids = torch.empty(positions, config.num_clusters, dim) if keep_centroids else None
    for t in tqdm(range(positions), desc=f"K-means (k={config.num_clusters}) per position", unit="position",
                  disable=not progress or rank_and_world_size()[0] != 0):
        assignments[:, t], position_centroids = kmeans(features[:, t], replace(config, seed=config.seed + t))
        if centroids is not None:
            centroids[t] = position_centroids
    return assignments, centroids


def nearest_centroids(features: Tensor, centroids: Tensor, max_block: int = MAX_BLOCK) -> tuple[Tensor, Tensor]:
    """The nearest (L2) of position t's centroids ``centroids`` [T, k, d] to every point ``features[n, t]``
    [N, T, d]: the K-means assignment step, and the latents of new points (windows, images).

    Returns (Z LongTensor [N, T], squared distances float32 [N, T]) on ``features``' device, computed as
    ||c||² − 2 x·c in float32, at most ``max_block`` point-centroid pairs at a time.
    """
    if features.dim() != 3 or centroids.dim() != 3 or features.shape[1:] != (centroids.shape[0], centroids.shape[2]):
        raise ValueError(f"features [N, T, d] and centroids [T, k, d] must agree on T and d, got shapes "
                         f"{tuple(features.shape)} and {tuple(centroids.shape)}")
    centroids = centroids.to(device=features.device, dtype=torch.float32)
    norms = (centroids * centroids).sum(2)                                                  # [T, k]
    rows = max(1, max_block // centroids.shape[1])
    labels = torch.empty(features.shape[:2], dtype=torch.long, device=features.device)
    distances = torch.empty(features.shape[:2], dtype=torch.float32, device=features.device)
    for t in range(features.shape[1]):
        for start in range(0, len(features), rows):
            block = features[start:start + rows, t].float()
            scores = norms[t] - 2.0 * block @ centroids[t].T                              # ||c||² − 2 x·c
            best, labels[start:start + rows, t] = scores.min(1)
            distances[start:start + rows, t] = (best + (block * block).sum(1)).clamp_min(0)
    return labels, distances
