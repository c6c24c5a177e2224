"""The sizes and trees of a patch circuit (:class:`PatchCircuitConfig`, see :mod:`.patch_circuit`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from .tree_pass import check_tree


@dataclass(frozen=True)
class PatchCircuitConfig:
    """Sizes and trees of a patch circuit. ``value_parents`` (over the D values of a patch) and ``latent_parents``
    (over the P patch latents) give each node's parent, -1 for the root; ``None`` is a chain."""

    num_patches: int
    values_per_patch: int
    num_clusters: int = 16
    hidden_size: int = 16
    latent_hidden_size: int | None = None
    num_categories: int = 256
    tied: bool = False
    value_parents: tuple[int, ...] | None = None
    latent_parents: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.latent_hidden_size is None:
            object.__setattr__(self, "latent_hidden_size", self.num_clusters)
        for name in ("num_patches", "values_per_patch", "num_clusters", "hidden_size", "latent_hidden_size",
                     "num_categories"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.tied, bool):
            raise ValueError(f"tied must be True or False, got {self.tied!r}")
        for name, size in (("value_parents", self.values_per_patch), ("latent_parents", self.num_patches)):
            parents = getattr(self, name)
            parents = tuple(range(-1, size - 1)) if parents is None else check_tree(parents)
            if len(parents) != size:
                raise ValueError(f"{name} must have one entry per node ({size}), got {len(parents)}")
            object.__setattr__(self, name, parents)

    def parameter_shapes(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """``{group name: (shape, dim along which it sums to 1)}``."""
        patches, clusters, latent = self.num_patches, self.num_clusters, self.latent_hidden_size
        stacks, values, hidden = 1 if self.tied else patches, self.values_per_patch, self.hidden_size
        return {"latent_root": ((1, latent), 1),
                "latent_transitions": ((1, patches - 1, latent, latent), 3),
                "latent_emissions": ((patches, latent, clusters), 2),
                "patch_root": ((stacks, clusters, hidden), 2),
                "patch_transitions": ((stacks, clusters, values - 1, hidden, hidden), 4),
                "patch_emissions": ((stacks, clusters, values, self.num_categories, hidden), 3)}

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape, _ in self.parameter_shapes().values())

    def check_assignments(self, assignments: Tensor, batch_size: int) -> Tensor:
        """``assignments`` itself, after checking it is an integer tensor [batch_size, P] of cluster ids."""
        if (not isinstance(assignments, Tensor) or assignments.dtype.is_floating_point
                or tuple(assignments.shape) != (batch_size, self.num_patches)):
            raise ValueError(f"assignments must be an integer tensor [{batch_size}, {self.num_patches}], got "
                             f"{tuple(getattr(assignments, 'shape', ()))}")
        if bool((assignments < 0).any()) or bool((assignments >= self.num_clusters).any()):
            raise ValueError(f"assignments must be cluster ids in [0, {self.num_clusters})")
        return assignments
