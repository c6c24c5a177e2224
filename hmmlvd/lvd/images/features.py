"""Patch features with context (paper §5): the teacher's encoder output at patch i when only the patches of a
context set S_i ∋ i are visible.

Contexts:
- ``none``: S_i = {i}, each patch alone.
- ``mst``: encode each patch alone on a subsample of images; correlate every pair of patches; take the
  maximum spanning tree of those correlations, rooted at its centre; S_i = i and its ancestors (the path from
  i up to the root).
- ``neighbours``: S_i = the 3×3 block of patches around i, clipped at the image border.

The correlation of patches i and j is the mean over feature dimensions k of |Pearson(F[:, i, k], F[:, j, k])|,
taken across images, where F [n, P, d] are the context-free features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...pc.structures import chow_liu_tree
from ...data.patches import PatchGrid
from .teachers import Teacher, check_teacher_images, teacher_grid

CONTEXTS = ("none", "mst", "neighbours")


@dataclass(frozen=True, eq=False)
class PatchContext:
    """The context structure: ``visible_sets[i]`` lists the patches visible when encoding patch i, i first.
    For ``mst`` also the tree (``parents[i]``, -1 at the root) and the correlations [P, P] it was built from."""

    kind: str
    visible_sets: tuple[tuple[int, ...], ...]
    parents: tuple[int, ...] | None = None
    correlations: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.kind!r}")
        for patch, visible in enumerate(self.visible_sets):
            if not visible or visible[0] != patch or len(set(visible)) != len(visible):
                raise ValueError(f"visible_sets[{patch}] must start with {patch} and hold distinct patches, "
                                 f"got {visible}")
            if min(visible) < 0 or max(visible) >= len(self.visible_sets):
                raise ValueError(f"visible_sets[{patch}]={visible} names a patch outside "
                                 f"0..{len(self.visible_sets) - 1}")

    @property
    def num_patches(self) -> int:
        return len(self.visible_sets)

    def as_dict(self) -> dict:
        """A JSON-able form (for saving beside a model); invert with :meth:`from_dict`."""
        return {"kind": self.kind, "visible_sets": [list(s) for s in self.visible_sets],
                "parents": None if self.parents is None else list(self.parents),
                "correlations": None if self.correlations is None else self.correlations.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> PatchContext:
        correlations = values.get("correlations")
        parents = values.get("parents")
        return cls(values["kind"], tuple(tuple(s) for s in values["visible_sets"]),
                   None if parents is None else tuple(parents),
                   None if correlations is None else torch.tensor(correlations, dtype=torch.float32))


class PatchFeatures(NamedTuple):
    """``features`` float32 [N, P, d] and the ``context`` used to compute them."""

    features: Tensor
    context: PatchContext


def no_context(num_patches: int) -> PatchContext:
    """Each patch alone."""
    return PatchContext("none", tuple((patch,) for patch in range(num_patches)))


def neighbour_context(grid: int | PatchGrid) -> PatchContext:
    """The 3×3 block of patches around each patch of ``grid`` (a square grid's side, or a :class:`PatchGrid`): 4
    patches at a corner, 6 on an edge, 9 inside, the patch itself first and the others in row-major order."""
    if isinstance(grid, int):
        if grid < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid}")
        grid = PatchGrid(grid, grid, 1)
    return PatchContext("neighbours", tuple((patch, *(other for other in grid.neighbourhood(patch) if other != patch))
                                            for patch in range(grid.num_patches)))


def feature_correlations(features: Tensor) -> Tensor:
    """[P, P] mean absolute Pearson correlation over the d feature dimensions, across the n images of
    ``features`` [n, P, d]. A dimension that is constant over the images counts as uncorrelated."""
    if features.dim() != 3 or len(features) < 2:
        raise ValueError(f"features must be [n >= 2, P, d], got shape {tuple(features.shape)}")
    centred = features.double() - features.double().mean(0)
    scale = centred.pow(2).mean(0).sqrt()
    standard = torch.where(scale > 1e-12, centred / scale.clamp_min(1e-12), torch.zeros_like(centred))
    pearson = torch.einsum("nik,njk->ijk", standard, standard) / len(features)
    return pearson.abs().mean(2).float()


def mst_context(features: Tensor, root: int | None = None) -> PatchContext:
    """The maximum spanning tree of :func:`feature_correlations` of ``features`` [n, P, d] (context-free
    features), rooted at ``root`` (default: the tree's centre, which keeps ancestor paths short)."""
    correlations = feature_correlations(features)
    parents, _, _ = chow_liu_tree(correlations.double().numpy(), root=root)
    sets = []
    for patch in range(len(parents)):
        path = [patch]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        sets.append(tuple(path))
    return PatchContext("mst", tuple(sets), tuple(parents), correlations)


def encode_patches(teacher: Teacher, images: Tensor, context: PatchContext, batch_size: int = 4096,
                   progress: bool = True) -> Tensor:
    """Feature of every patch with its context visible: float32 [N, P, d] for uint8 ``images`` [N, C, H, W].

    Patches whose visible sets have the same size are encoded together, ``batch_size`` (image, patch) queries
    per forward pass; the feature of patch i is the encoder's output token at patch i.
    """
    check_teacher_images(teacher, images)
    num_patches = teacher_grid(teacher).num_patches
    if context.num_patches != num_patches:
        raise ValueError(f"the context covers {context.num_patches} patches but the teacher has "
                         f"{num_patches}; build the context for this teacher")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for patch, visible in enumerate(context.visible_sets):
        groups.setdefault(len(visible), []).append(patch)
    features = torch.empty(len(images), num_patches, teacher.feature_size)
    bar = tqdm(total=len(images) * num_patches, desc=f"patch features ({context.kind})", unit="patch",
               disable=not progress)
    for patches in groups.values():
        sets = torch.tensor([context.visible_sets[patch] for patch in patches])           # [G, s]
        chunk = max(1, batch_size // len(patches))
        for start in range(0, len(images), chunk):
            block = images[start:start + chunk]
            queries = block.repeat_interleave(len(patches), dim=0)                        # [n·G, C, H, W]
            visible = sets.repeat(len(block), 1)                                           # [n·G, s]
            tokens = teacher.encode(queries, visible)[:, 0]                                # [n·G, d]
            features[start:start + len(block), patches] = tokens.view(len(block), len(patches), -1)
            bar.update(len(block) * len(patches))
    bar.close()
    return features


def patch_features(teacher: Teacher, images: Tensor, context: str | PatchContext = "mst", batch_size: int = 4096,
                   correlation_images: int = 2048, seed: int = 0, progress: bool = True) -> PatchFeatures:
    """Features [N, P, d] of every patch of uint8 ``images`` [N, C, H, W] with context, and the context used.

    ``context`` is ``"none"``, ``"mst"``, ``"neighbours"``, or a :class:`PatchContext` built earlier (pass the
    training images' context when featurising test images). For ``"mst"`` the tree is learnt from the
    context-free features of ``correlation_images`` images drawn (seeded) from ``images``.
    """
    check_teacher_images(teacher, images)
    grid = teacher_grid(teacher)
    if isinstance(context, str):
        if context == "none":
            context = no_context(grid.num_patches)
        elif context == "neighbours":
            context = neighbour_context(grid)
        elif context == "mst":
            if correlation_images < 2:
                raise ValueError(f"correlation_images must be >= 2, got {correlation_images}")
            generator = torch.Generator().manual_seed(seed)
            sample = torch.randperm(len(images), generator=generator)[:correlation_images]
            alone = encode_patches(teacher, images[sample], no_context(grid.num_patches), batch_size, progress)
            context = mst_context(alone)
        else:
            raise ValueError(f"context must be one of {CONTEXTS} or a PatchContext, got {context!r}")
    return PatchFeatures(encode_patches(teacher, images, context, batch_size, progress), context)
