"""The one K-means (hmmlvd.lvd.kmeans) for text and images: the backends, the per-position and shared modes, the
choice among restarts, the nearest-centroid step against brute force, and 2 gloo processes against 1."""
import importlib
from dataclasses import replace

import pytest
import torch

from hmmlvd.distributed import shard
from hmmlvd.lvd import KMeansConfig, cluster_positions, kmeans, nearest_centroids, torch_kmeans
from tests.two_gloo import run_on_two_ranks

kmeans_module = importlib.import_module("hmmlvd.lvd.kmeans")   # the attribute hmmlvd.lvd.kmeans is the function


def blobs(num_clusters=5, per_cluster=200, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_clusters, dim, generator=generator) * 10
    points = torch.cat([centres[i] + torch.randn(per_cluster, dim, generator=generator) for i in range(num_clusters)])
    return points, torch.arange(num_clusters).repeat_interleave(per_cluster)


def planted(count=300, positions=3, clusters=4, dim=5, seed=0):
    """Features [count, positions, dim] with known clusters: each position has its own well-separated centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(positions, clusters, dim, generator=generator) * 10
    truth = torch.randint(0, clusters, (count, positions), generator=generator)
    features = centres[torch.arange(positions), truth] + 0.1 * torch.randn(count, positions, dim, generator=generator)
    return features, truth


def ambiguous(count=203, positions=3, dim=2, seed=0):
    """Uniform noise [count, positions, dim]: no true clusters, so every seed and Lloyd step changes the result."""
    return torch.rand(count, positions, dim, generator=torch.Generator().manual_seed(seed))


def same_partition(labels, truth):
    """True when ``labels`` is ``truth`` up to a renaming of clusters."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(truth.tolist())) == len(set(labels.tolist()))


def inertia(points, labels, centroids):
    """Sum of squared distances of ``points`` [n, d] to their assigned centroids, in float64."""
    return ((points.double() - centroids.double()[labels]) ** 2).sum().item()


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
    for backend in ("auto", "torch"):
        labels, _ = kmeans(points, KMeansConfig(5, backend=backend))
        assert labels.min() >= 0 and labels.max() < 5
        assert labels[:10].unique().numel() == 1 and labels[10:].unique().numel() == 1 and labels[0] != labels[10]


def test_too_few_points_is_a_clear_error():
    for backend in ("auto", "torch"):
        with pytest.raises(ValueError, match="at least k points"):
            kmeans(torch.zeros(3, 2), KMeansConfig(4, backend=backend))


def test_scikit_learn_fallback_warns_and_clusters(monkeypatch):
    monkeypatch.setattr(kmeans_module, "_faiss", lambda: None)
    points, truth = blobs()
    with pytest.warns(RuntimeWarning, match="faiss is not installed"):
        labels, _ = kmeans(points, KMeansConfig(5, restarts=5, use_gpu=False))
    assert same_partition(labels, truth)


def test_torch_kmeans_recovers_blobs_and_matches_faiss_inertia():
    points, truth = blobs()
    labels, centroids = torch_kmeans(points, KMeansConfig(5, seed=1, restarts=5), max_block=64)
    assert same_partition(labels, truth)
    for cluster in range(5):
        torch.testing.assert_close(centroids[cluster], points[labels == cluster].mean(0), atol=1e-4, rtol=0)
    faiss_labels, faiss_centroids = kmeans(points, KMeansConfig(5, seed=1, restarts=5, use_gpu=False))
    assert inertia(points, labels, centroids) == pytest.approx(inertia(points, faiss_labels, faiss_centroids),
                                                               rel=1e-4)


def test_cuda_without_faiss_gpu_uses_torch_kmeans(monkeypatch):
    calls = []
    monkeypatch.setattr(kmeans_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kmeans_module, "torch_kmeans", lambda points, config, device: calls.append(device) or "torch")
    assert kmeans(torch.randn(20, 3), KMeansConfig(4)) == "torch" and calls == ["cuda"]
    assert kmeans(torch.randn(20, 3), KMeansConfig(4, use_gpu=False))[0].shape == (20,)


def test_torch_restarts_keep_the_run_of_least_inertia():
    points = ambiguous(300, 1)[:, 0]
    config = KMeansConfig(6, iterations=3, seed=4, restarts=6, backend="torch")
    runs = [kmeans_module._lloyd(points, config, restart, 1 << 26) for restart in range(6)]
    inertias = [inertia(points, labels, centroids) for _, labels, centroids in runs]
    assert max(inertias) > min(inertias) * 1.01                    # the restarts differ, so the choice matters
    for (reported, _, _), independent in zip(runs, inertias):
        assert reported == pytest.approx(independent, rel=1e-6)
    best = min(range(6), key=inertias.__getitem__)
    labels, centroids = torch_kmeans(points, config)
    assert torch.equal(labels, runs[best][1]) and torch.equal(centroids, runs[best][2])
    assert inertia(points, labels, centroids) == pytest.approx(min(inertias), rel=1e-9)


def test_cluster_positions_recovers_planted_clusters_at_every_position():
    features, truth = planted()
    for backend in ("auto", "torch"):
        latents, centroids = cluster_positions(features, 4, restarts=10, backend=backend, progress=False)
        assert latents.shape == (300, 3) and latents.dtype == torch.long and centroids.shape == (3, 4, 5)
        for position in range(3):
            assert same_partition(latents[:, position], truth[:, position])
            for cluster in range(4):                                     # centroids are the cluster means
                members = features[latents[:, position] == cluster, position]
                assert torch.allclose(centroids[position, cluster], members.mean(0), atol=1e-3)


def test_per_position_mode_is_one_kmeans_per_position_seeded_by_position():
    features = ambiguous()
    config = KMeansConfig(3, iterations=4, seed=7, restarts=2, backend="torch")
    latents, centroids = cluster_positions(features, config, progress=False)
    for position in range(3):
        labels, position_centroids = kmeans(features[:, position].contiguous(), replace(config, seed=7 + position))
        assert torch.equal(latents[:, position], labels) and torch.equal(centroids[position], position_centroids)
    assert not torch.equal(centroids[0], centroids[1])
    alone, none = cluster_positions(features, config, keep_centroids=False, progress=False)
    assert torch.equal(alone, latents) and none is None
    same, _ = cluster_positions(features, 3, iterations=4, seed=7, restarts=2, backend="torch", progress=False)
    assert torch.equal(same, latents)                                # a number of clusters with keyword settings


def test_shared_mode_numbers_the_clusters_alike_at_every_position():
    """Tied patch circuits need cluster c to be one kind of patch everywhere; per-position K-means numbers its
    clusters independently at each position, the shared K-means does not."""
    features, truth = planted(count=200, positions=1)
    features = torch.cat([features, features.roll(7, 0), features.roll(30, 0)], 1)   # the same centres at 3 positions
    truth = torch.cat([truth, truth.roll(7, 0), truth.roll(30, 0)], 1)
    for backend in ("auto", "torch"):
        latents, centroids = cluster_positions(features, 4, restarts=10, backend=backend, shared=True, progress=False)
        assert latents.shape == (200, 3) and centroids.shape == (3, 4, 5)
        assert same_partition(latents.flatten(), truth.flatten())                 # one numbering for all positions
        assert torch.equal(centroids[0], centroids[1]) and torch.equal(centroids[0], centroids[2])
        assert torch.equal(nearest_centroids(features, centroids)[0], latents)
    config = KMeansConfig(3, iterations=4, seed=2, backend="torch")
    features = ambiguous()
    latents, centroids = cluster_positions(features, config, shared=True, progress=False)
    labels, flat_centroids = kmeans(features.reshape(-1, 2), config)     # row-major: point n at position t is n·T + t
    assert torch.equal(latents, labels.view(203, 3)) and torch.equal(centroids[2], flat_centroids)


def test_nearest_centroids_matches_brute_force_and_reproduces_training_assignments():
    features, _ = planted()
    latents, centroids = cluster_positions(features, 4, progress=False)
    assert torch.equal(nearest_centroids(features, centroids, max_block=64)[0], latents)
    new = torch.randn(50, 3, 5, generator=torch.Generator().manual_seed(1)) * 5
    squared = ((new[:, :, None, :].double() - centroids[None].double()) ** 2).sum(3)              # [N, T, k]
    for max_block in (7, 1 << 26):                                     # 1 point at a time, or all at once
        labels, distances = nearest_centroids(new, centroids, max_block=max_block)
        assert labels.dtype == torch.long and torch.equal(labels, squared.argmin(2))
        torch.testing.assert_close(distances.double(), squared.min(2).values, rtol=1e-5, atol=1e-3)
    assert nearest_centroids(new[:0], centroids)[0].shape == (0, 3)


def test_bad_inputs_raise_clear_errors():
    features, _ = planted(count=10)
    with pytest.raises(ValueError, match=r"\[N, T, d\]"):
        cluster_positions(features[:, 0], 2, progress=False)
    for shared in (False, True):
        with pytest.raises(ValueError, match="at least k points"):
            cluster_positions(features[:, :1], 11, shared=shared, progress=False)
    with pytest.raises(ValueError, match="must agree on T and d"):
        nearest_centroids(features, torch.zeros(2, 4, 5))
    with pytest.raises(TypeError, match="not both|got both"):
        cluster_positions(features, KMeansConfig(2), seed=3, progress=False)


TWO_PROCESS = {"positions": KMeansConfig(4, iterations=6, seed=3, restarts=3, backend="torch"),
               "shared": KMeansConfig(5, iterations=6, seed=1, restarts=3, backend="torch")}


def sharded_clusters() -> dict:
    """Per-position and shared K-means of this rank's shard of 203 ambiguous points (all of them in one process)."""
    features = shard(ambiguous())
    results = {}
    for name, config in TWO_PROCESS.items():
        results[f"{name}.z"], results[f"{name}.centroids"] = cluster_positions(
            features, config, shared=name == "shared", progress=False)
    return results


def test_two_gloo_processes_on_shards_match_one_process_on_all_points(tmp_path):
    ranks = run_on_two_ranks(sharded_clusters, tmp_path)
    single = sharded_clusters()
    assert [len(part["positions.z"]) for part in ranks] == [102, 101]       # uneven shards
    for name in TWO_PROCESS:
        assert torch.equal(torch.cat([part[f"{name}.z"] for part in ranks]), single[f"{name}.z"])
        for part in ranks:
            torch.testing.assert_close(part[f"{name}.centroids"], single[f"{name}.centroids"], rtol=0, atol=1e-6)
