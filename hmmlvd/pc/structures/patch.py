"""The two Chow–Liu trees of a patch circuit: one over the values of a patch, one over the patch latents."""
from __future__ import annotations

import torch
from torch import Tensor

from .hclt import chow_liu_tree, mutual_information


def patch_trees(x: Tensor, z: Tensor, num_clusters: int, *, num_categories: int = 256, num_bins: int | None = 8,
                latent_alpha: float = 0.1, max_patches: int = 500_000,
                seed: int = 0) -> tuple[list[int], list[int]]:
    """``(value_parents, latent_parents)`` for patches ``x`` [N, P, D] (complete ids) and assignments ``z`` [N, P].

    The value tree is the Chow–Liu tree of the values of all patches pooled over positions (one tree shared by
    every sub-circuit, so that all of them have one shape; at most ``max_patches`` patches, drawn with ``seed``;
    values merged into ``num_bins`` bins for the mutual information). The latent tree is the maximum spanning tree
    of the mutual information of the cluster ids (counts smoothed with ``latent_alpha`` per cell).
    """
    x, z = torch.as_tensor(x), torch.as_tensor(z)
    if x.dim() != 3 or z.shape != x.shape[:2]:
        raise ValueError(f"x must be [N, P, D] patches and z [N, P] assignments; got {tuple(x.shape)} and "
                         f"{tuple(z.shape)}")
    if (z < 0).any() or (z >= num_clusters).any():
        raise ValueError(f"z must hold cluster ids in [0, {num_clusters})")
    pooled = x.reshape(-1, x.shape[2])
    if len(pooled) > max_patches:
        pooled = pooled[torch.randperm(len(pooled), generator=torch.Generator().manual_seed(seed))[:max_patches]]
    value_parents, _, _ = chow_liu_tree(mutual_information(pooled, num_categories, num_bins=num_bins))
    latent_parents, _, _ = chow_liu_tree(mutual_information(z, num_clusters, alpha=latent_alpha))
    return value_parents, latent_parents
