"""What a circuit can condition on: hard category ids, real values for Gaussian inputs, or soft evidence.

* a LongTensor ``[B, V]`` of category ids, ``-1`` = missing (circuits with categorical inputs only);
* a float tensor ``[B, V]`` with ``NaN`` = missing (circuits with Gaussian inputs; categorical
  columns must then hold whole numbers);
* a float tensor ``[B, V, K]`` of soft evidence: ``soft[b, v, c]`` ≥ 0 weighs category ``c`` of
  variable ``v``, and ``p(soft) = Σ_x Π_v soft[b, v, x_v] · p(x)``. A row of ones marginalises the
  variable. :func:`soften` turns hard data into this form (data softening).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass
class Evidence:
    """A validated batch. ``ids`` holds category ids (``-1`` missing) unless the evidence is soft."""

    ids: Tensor | None             # [B, V] long
    values: Tensor | None          # [B, V] float, NaN = missing; only for circuits with Gaussian inputs
    soft: Tensor | None            # [B, V, K] float soft-evidence weights

    def __len__(self) -> int:
        return len(self.soft if self.soft is not None else self.ids)

    @cached_property
    def ids_by_variable(self) -> Tensor:
        """``ids`` transposed to ``[V, B]`` (contiguous, so selecting variables copies whole rows)."""
        return self.ids.T.contiguous()

    @cached_property
    def values_by_variable(self) -> Tensor:
        """``values`` transposed to ``[V, B]``."""
        return self.values.T.contiguous()

    def require_hard(self, query: str) -> None:
        if self.soft is not None:
            raise ValueError(f"{query} takes hard evidence ([batch, num_variables], -1 or NaN = missing); "
                             "soft evidence is supported by log_likelihood and EM")


def parse_evidence(x, num_categories: Tensor, gaussian: Tensor, *, dtype: torch.dtype) -> Evidence:
    """Validate ``x`` against a circuit with per-variable ``num_categories`` (0 = Gaussian or unused)
    and Gaussian mask ``gaussian``; see the module docstring for the accepted forms."""
    num_variables = len(num_categories)
    device = num_categories.device
    has_gaussian = bool(gaussian.any())
    if not isinstance(x, Tensor) or x.dim() not in (2, 3) or x.shape[1] != num_variables:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        kind = "a float tensor" if has_gaussian else "a LongTensor"
        raise ValueError(f"expected {kind} [batch, {num_variables}] (-1 or NaN = missing) or soft evidence "
                         f"[batch, {num_variables}, K], got {shape}")
    if x.dim() == 3:
        return _soft_evidence(x, num_categories, has_gaussian, dtype)
    if x.dtype == torch.bool or (not has_gaussian and x.dtype.is_floating_point):
        raise ValueError(f"inputs must be integer category ids (LongTensor), got dtype {x.dtype}")
    if has_gaussian and not x.dtype.is_floating_point:
        raise ValueError("this circuit has Gaussian inputs: pass a float tensor [batch, num_variables] with NaN "
                         f"for missing values, got dtype {x.dtype}")
    limits = torch.where(num_categories > 0, num_categories, torch.iinfo(torch.long).max)
    categorical = num_categories > 0
    if x.dtype.is_floating_point:
        x = x.to(device=device, dtype=dtype)
        columns = x[:, categorical]
        observed = ~torch.isnan(columns)
        if len(x) and (torch.isinf(x).any() or (observed & (columns != columns.round())).any()):
            raise ValueError("real-valued inputs must be finite (NaN = missing), and categorical columns must hold "
                             "whole-number category ids")
        ids = torch.where(torch.isnan(x) | ~categorical, -1.0, x).long()
        values = x
    else:
        ids, values = x.to(device=device, dtype=torch.long), None
    if len(ids) and ((ids < -1).any() or (ids >= limits).any()):
        raise ValueError("inputs must lie in [0, num_categories) per variable, or be -1 for missing; "
                         f"per-variable category counts are {num_categories.tolist()[:16]}...")
    return Evidence(ids, values, None)


def _soft_evidence(x: Tensor, num_categories: Tensor, has_gaussian: bool, dtype: torch.dtype) -> Evidence:
    width = int(num_categories.max())
    if has_gaussian:
        raise ValueError("soft evidence [batch, num_variables, K] is for circuits with categorical inputs only")
    if not x.dtype.is_floating_point or x.shape[2] < width:
        raise ValueError(f"soft evidence must be a float tensor [batch, {len(num_categories)}, K >= {width}] of "
                         f"non-negative weights, got dtype {x.dtype} and shape {tuple(x.shape)}")
    x = x.to(device=num_categories.device, dtype=dtype)
    if len(x) and (not torch.isfinite(x).all() or (x < 0).any()):
        raise ValueError("soft evidence weights must be finite and non-negative (a row of ones = missing)")
    return Evidence(None, None, x)


def soften(data: Tensor, strength: float, num_categories: int = 2, *, marginals: Tensor | None = None) -> Tensor:
    """Data softening: hard ids ``[N, V]`` → soft evidence ``[N, V, num_categories]``.

    The observed category keeps weight ``1 - strength`` and ``strength`` is spread over all categories
    in proportion to ``marginals`` (``[V, num_categories]``, default uniform). Missing values (-1)
    become rows of ones. ``strength = 0`` reproduces the hard data.
    """
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    data = torch.as_tensor(data)
    if data.dim() != 2 or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ValueError(f"data must be a LongTensor [N, V] of category ids, got {data.dtype} {tuple(data.shape)}")
    if len(data) and ((data < -1).any() or (data >= num_categories).any()):
        raise ValueError(f"data must hold category ids in [0, {num_categories}) or -1 for missing")
    num_variables = data.shape[1]
    if marginals is None:
        marginals = torch.full((num_variables, num_categories), 1.0 / num_categories)
    marginals = torch.as_tensor(marginals, dtype=torch.float32)
    if marginals.shape != (num_variables, num_categories) or (marginals < 0).any():
        raise ValueError(f"marginals must be non-negative with shape {(num_variables, num_categories)}, "
                         f"got {tuple(marginals.shape)}")
    marginals = marginals / marginals.sum(-1, keepdim=True)
    one_hot = torch.zeros(*data.shape, num_categories).scatter_(2, data.clamp_min(0)[..., None], 1.0)
    soft = (1.0 - strength) * one_hot + strength * marginals
    return torch.where((data < 0)[..., None], torch.ones_like(soft), soft)


def empirical_marginals(data: Tensor, num_categories: int = 2, alpha: float = 1.0) -> Tensor:
    """Per-variable category frequencies ``[V, num_categories]`` of ids ``data`` ``[N, V]`` (-1 skipped),
    smoothed with ``alpha`` per cell."""
    data = torch.as_tensor(data, dtype=torch.long)
    counts = torch.full((data.shape[1], num_categories), float(alpha))
    observed = data >= 0
    columns = torch.arange(data.shape[1]).expand_as(data)
    counts.index_put_((columns[observed], data[observed]), torch.ones(int(observed.sum())), accumulate=True)
    return counts / counts.sum(-1, keepdim=True)
