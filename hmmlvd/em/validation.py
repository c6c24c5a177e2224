"""The check every loaded model runs: its parameter groups are categorical distributions."""
from __future__ import annotations

import torch

from .mstep import ParameterGroup

NORMALIZATION_TOLERANCE = 1e-3     # float32 rows over a few hundred categories sum to 1 within ~1e-5


def check_distributions(groups: dict[str, ParameterGroup], source: str,
                        tolerance: float = NORMALIZATION_TOLERANCE) -> None:
    """Raise ValueError, naming ``source`` and the group, unless every group holds finite, non-negative values
    whose sums along the group's ``dim`` are within ``tolerance`` of 1."""
    for name, group in groups.items():
        values = group.values
        if not values.is_floating_point():
            raise ValueError(f"{source}: {name} must hold floating-point probabilities, got {values.dtype}")
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise ValueError(f"{source}: {name} contains negative, NaN or infinite probabilities")
        error = (values.double().sum(dim=group.dim) - 1).abs().max().item() if values.numel() else 0.0
        if error > tolerance:
            raise ValueError(f"{source}: {name} distributions do not sum to 1 (max error {error:.2e}, tolerance "
                             f"{tolerance:.0e}); the file was changed or damaged after hmmlvd wrote it")
