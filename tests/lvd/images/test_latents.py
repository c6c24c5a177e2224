import pytest
import torch

from hmmlvd.lvd.images import assign_latents, nearest_centroids


def planted(count: int = 300, patches: int = 3, clusters: int = 4, dim: int = 5, seed: int = 0):
    """Features with known clusters: every patch position has its own well-separated centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(patches, clusters, dim, generator=generator) * 10
    truth = torch.randint(0, clusters, (count, patches), generator=generator)
    features = centres[torch.arange(patches), truth] + 0.1 * torch.randn(count, patches, dim, generator=generator)
    return features, truth


def same_partition(labels: torch.Tensor, truth: torch.Tensor) -> bool:
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(truth.tolist())) == len(set(labels.tolist()))


def test_assign_latents_recovers_planted_clusters_at_every_patch():
    features, truth = planted()
    latents, centroids = assign_latents(features, 4, restarts=10, progress=False)   # best of 10 seeds
    assert latents.shape == (300, 3) and latents.dtype == torch.long and centroids.shape == (3, 4, 5)
    for patch in range(3):
        assert same_partition(latents[:, patch], truth[:, patch])
        for cluster in range(4):                                     # centroids are the cluster means
            members = features[latents[:, patch] == cluster, patch]
            assert torch.allclose(centroids[patch, cluster], members.mean(0), atol=1e-3)


def test_shared_assignments_mean_the_same_cluster_at_every_patch():
    """Tied patch circuits need cluster c to be one kind of patch everywhere; per-position K-means numbers its
    clusters independently at each position, the shared K-means does not."""
    features, truth = planted(count=200, patches=1)
    features = torch.cat([features, features.roll(7, 0), features.roll(30, 0)], 1)   # the same centres at 3 patches
    truth = torch.cat([truth, truth.roll(7, 0), truth.roll(30, 0)], 1)
    latents, centroids = assign_latents(features, 4, restarts=10, progress=False, shared=True)
    assert latents.shape == (200, 3) and centroids.shape == (3, 4, 5)
    assert same_partition(latents.flatten(), truth.flatten())                 # one numbering for all positions
    assert torch.equal(centroids[0], centroids[1]) and torch.equal(centroids[0], centroids[2])
    assert torch.equal(nearest_centroids(features, centroids), latents)


def test_nearest_centroids_reproduces_training_assignments_and_matches_brute_force():
    features, _ = planted()
    latents, centroids = assign_latents(features, 4, progress=False)
    assert torch.equal(nearest_centroids(features, centroids, batch_size=64), latents)
    new, _ = planted(count=50, seed=1)
    brute = torch.stack([torch.cdist(new[:, patch], centroids[patch]).argmin(1) for patch in range(3)], 1)
    assert torch.equal(nearest_centroids(new, centroids, batch_size=7), brute)


def test_bad_latent_inputs_raise_clear_errors():
    features, _ = planted(count=10)
    with pytest.raises(ValueError, match=r"\[N, P, d\]"):
        assign_latents(features[:, 0], 2, progress=False)
    with pytest.raises(ValueError, match="at least k points"):
        assign_latents(features, 11, progress=False)
    with pytest.raises(ValueError, match="must agree on P and d"):
        nearest_centroids(features, torch.zeros(2, 4, 5))
