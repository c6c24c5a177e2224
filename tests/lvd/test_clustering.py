import pytest
import torch

from hmmlvd.lvd import KMeansConfig, cluster_positions, kmeans
from hmmlvd.lvd import clustering


def blobs(num_clusters=5, per_cluster=200, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=generator) * 10
    points = torch.cat([centres[i] + torch.randn(per_cluster, dim, generator=generator) for i in range(num_clusters)])
    return points, torch.arange(num_clusters).repeat_interleave(per_cluster)


def same_partition(labels, truth):
    """True when ``labels`` is ``truth`` up to a renaming of clusters."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(truth.tolist())) == len(set(labels.tolist()))


def test_faiss_kmeans_recovers_well_separated_blobs():
    points, truth = blobs()
    labels, centroids = kmeans(points, KMeansConfig(5, seed=1, restarts=5))
    assert same_partition(labels, truth)
    assert centroids.shape == (5, 8)


def test_kmeans_uses_every_point_not_a_subsample():
    # 3 clusters x 2000 points > faiss' default cap of 256 points per centroid; with the cap
    # raised the centroids are the exact cluster means (tolerance 1e-3).
    points, truth = blobs(3, 2000, 4)
    labels, centroids = kmeans(points, KMeansConfig(3, iterations=30))
    for cluster in range(3):
        assert torch.allclose(centroids[cluster], points[labels == cluster].mean(0), atol=1e-3)


def test_duplicate_points_leave_empty_clusters_without_failing():
    points = torch.cat([torch.zeros(10, 4), torch.ones(10, 4)])
    labels, _ = kmeans(points, KMeansConfig(5))
    assert labels.min() >= 0 and labels.max() < 5 and len(set(labels.tolist())) <= 5
    assert labels[:10].unique().numel() == 1 and labels[10:].unique().numel() == 1


def test_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match="at least k points"):
        kmeans(torch.zeros(3, 2), KMeansConfig(4))


def test_scikit_learn_fallback_warns_and_clusters(monkeypatch):
    monkeypatch.setattr(clustering, "_faiss", lambda: None)
    points, truth = blobs()
    with pytest.warns(RuntimeWarning, match="faiss is not installed"):
        labels, _ = kmeans(points, KMeansConfig(5, restarts=5, use_gpu=False))
    assert same_partition(labels, truth)


def test_cluster_positions_runs_one_kmeans_per_position():
    points, truth = blobs(4, 50, 6)
    embeddings = torch.stack([points, points.flip(0)], dim=1)  # position 1 sees the points reversed
    assignments, seconds = cluster_positions(embeddings, KMeansConfig(4, restarts=5), progress=False)
    assert assignments.shape == (200, 2) and seconds >= 0
    assert same_partition(assignments[:, 0], truth) and same_partition(assignments[:, 1], truth.flip(0))


def test_torch_kmeans_recovers_blobs_and_matches_faiss_inertia():
    points, truth = blobs()
    labels, centroids = clustering.torch_kmeans(points, KMeansConfig(5, seed=1, restarts=5), max_block=64)
    assert same_partition(labels, truth)
    for cluster in range(5):
        torch.testing.assert_close(centroids[cluster], points[labels == cluster].mean(0), atol=1e-4, rtol=0)
    faiss_labels, faiss_centroids = kmeans(points, KMeansConfig(5, seed=1, restarts=5, use_gpu=False))

    def inertia(assigned, centres):
        return ((points - centres[assigned]) ** 2).sum().item()
    assert inertia(labels, centroids) == pytest.approx(inertia(faiss_labels, faiss_centroids), rel=1e-4)


def test_cuda_without_faiss_gpu_uses_torch_kmeans(monkeypatch):
    calls = []
    monkeypatch.setattr(clustering.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(clustering, "torch_kmeans", lambda points, config, device: calls.append(device) or "torch")
    assert kmeans(torch.randn(20, 3), KMeansConfig(4)) == "torch" and calls == ["cuda"]
    assert kmeans(torch.randn(20, 3), KMeansConfig(4, use_gpu=False))[0].shape == (20,)
