"""Scaled-probability forward–backward for (non-)homogeneous categorical HMMs.

Each step renormalises the state vector by its sum ``c_t``; ``log c_t`` is the
conditional log-probability ``log p(x_t | x_<t)`` and is accumulated in float64.
A step is one GEMM ``[B, h] @ [h, h]`` plus an emission gather; missing tokens (-1)
have emission factor 1.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ForwardResult(NamedTuple):
    alphas: Tensor           # [L, B, h] filtering distributions p(z_t | x_<=t)
    log_normalizers: Tensor  # [L, B] float64: log p(x_t | x_<t), 0 where x_t is missing


def emission_factors(emission_matrix: Tensor, tokens: Tensor) -> Tensor:
    """Rows ``p(x_t = tokens[b] | z_t)`` of a ``[V, h]`` table; all ones where the token is missing."""
    missing = tokens < 0
    rows = emission_matrix.index_select(0, tokens.clamp(min=0))
    return rows.masked_fill(missing.unsqueeze(1), 1.0) if bool(missing.any()) else rows


def _normalize_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    totals = values.sum(dim=1)
    safe = torch.where(totals > 0, totals, torch.ones_like(totals))
    return values / safe.unsqueeze(1), totals.double().log()


def forward(hmm, tokens: Tensor) -> ForwardResult:
    """Run the scaled forward pass over ``tokens`` [B, L]."""
    batch, length = tokens.shape
    alphas = torch.empty(length, batch, hmm.num_states, dtype=hmm.dtype, device=hmm.device)
    log_normalizers = torch.empty(length, batch, dtype=torch.float64, device=hmm.device)
    if length == 0:
        return ForwardResult(alphas, log_normalizers)
    state = hmm.initial.unsqueeze(0) * emission_factors(hmm.emission_matrix(0), tokens[:, 0])
    alphas[0], log_normalizers[0] = _normalize_rows(state)
    for t in range(1, length):
        state = (alphas[t - 1] @ hmm.transition_matrix(t - 1)) * emission_factors(hmm.emission_matrix(t), tokens[:, t])
        alphas[t], log_normalizers[t] = _normalize_rows(state)
    return ForwardResult(alphas, log_normalizers)


def forward_backward(hmm, tokens: Tensor, counts: dict[str, Tensor] | None = None,
                     posteriors: Tensor | None = None) -> Tensor:
    """Forward–backward over ``tokens`` [B, L].

    Adds expected counts into ``counts`` (keys ``initial``, ``transitions``,
    ``emissions``, in parameter shapes) and writes ``p(z_t | x)`` into
    ``posteriors`` [B, L, h] when given. Returns per-sequence log-likelihoods (float64).
    """
    alphas, log_normalizers = forward(hmm, tokens)
    length = tokens.shape[1]
    scales = log_normalizers.exp().to(hmm.dtype)           # c_t, [L, B]
    beta = torch.ones_like(alphas[0]) if length else None
    for t in range(length - 1, -1, -1):
        gamma = alphas[t] * beta
        if posteriors is not None:
            posteriors[:, t] = gamma
        if counts is not None:
            observed = tokens[:, t] >= 0
            position = hmm.position_index(t)
            if bool(observed.all()):
                counts["emissions"][position].index_add_(0, tokens[:, t], gamma)
            else:
                counts["emissions"][position].index_add_(0, tokens[observed, t], gamma[observed])
        if t == 0:
            if counts is not None:
                counts["initial"] += gamma.sum(dim=0)
            break
        transition = hmm.transition_matrix(t - 1)
        weighted = emission_factors(hmm.emission_matrix(t), tokens[:, t]) * beta
        weighted = weighted / torch.where(scales[t] > 0, scales[t], torch.ones_like(scales[t])).unsqueeze(1)
        if counts is not None:
            counts["transitions"][hmm.position_index(t - 1)] += transition * (alphas[t - 1].T @ weighted)
        beta = weighted @ transition.T
    return log_normalizers.sum(dim=0)
