"""Scaled-probability forward–backward for (non-)homogeneous categorical HMMs.

Each step renormalises the state vector by its sum ``c_t``; ``log c_t`` is the
conditional log-probability ``log p(x_t | x_<t)`` and is accumulated in float64.
A step is one GEMM ``[B, h] @ [h, h]`` plus an emission gather; missing tokens (-1)
have emission factor 1.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor


class ForwardResult(NamedTuple):
    alphas: Tensor           # [L, B, h] filtering distributions p(z_t | x_<=t)
    log_normalizers: Tensor  # [L, B] float64: log p(x_t | x_<t), 0 where x_t is missing


def emission_factors(emission_matrix: Tensor, tokens: Tensor, out: Tensor | None = None) -> Tensor:
    """Rows ``p(x_t = tokens[b] | z_t)`` of a ``[V, h]`` table; all ones where the token is missing.

    Written into ``out`` [B, h] when given."""
    missing = tokens < 0
    if out is None:
        out = torch.empty(len(tokens), emission_matrix.shape[1], dtype=emission_matrix.dtype,
                          device=emission_matrix.device)
    torch.index_select(emission_matrix, 0, tokens.clamp(min=0), out=out)
    if bool(missing.any()):
        out.masked_fill_(missing.unsqueeze(1), 1.0)
    return out


@contextmanager
def gemm_precision(hmm):
    """Inside the block, CUDA float32 GEMMs use TF32 tensor cores when ``hmm.allow_tf32`` is set
    (inputs rounded to a 10-bit mantissa, fp32 accumulation and output); the global flag is restored after."""
    if not (hmm.allow_tf32 and hmm.device.type == "cuda"):
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _normalize_in_place(values: Tensor) -> Tensor:
    """Divide each row by its sum in place; return the float64 log of the sums (-inf for zero rows)."""
    totals = values.sum(dim=1)
    values.div_(torch.where(totals > 0, totals, torch.ones_like(totals)).unsqueeze(1))
    return totals.double().log()


def forward(hmm, tokens: Tensor, emissions_out: Tensor | None = None) -> ForwardResult:
    """Run the scaled forward pass over ``tokens`` [B, L].

    ``emissions_out`` [L, B, h], when given, receives the emission factors so that a
    backward pass need not gather them again.
    """
    batch, length = tokens.shape
    alphas = torch.empty(length, batch, hmm.num_states, dtype=hmm.dtype, device=hmm.device)
    log_normalizers = torch.empty(length, batch, dtype=torch.float64, device=hmm.device)
    with gemm_precision(hmm):
        for t in range(length):
            factors = emission_factors(hmm.emission_matrix(t), tokens[:, t],
                                       out=emissions_out[t] if emissions_out is not None else None)
            if t == 0:
                torch.mul(hmm.initial.unsqueeze(0), factors, out=alphas[0])
            else:
                torch.mm(alphas[t - 1], hmm.transition_matrix(t - 1), out=alphas[t])
                alphas[t].mul_(factors)
            log_normalizers[t] = _normalize_in_place(alphas[t])
    return ForwardResult(alphas, log_normalizers)


def forward_backward(hmm, tokens: Tensor, counts: dict[str, Tensor] | None = None,
                     posteriors: Tensor | None = None) -> Tensor:
    """Forward–backward over ``tokens`` [B, L].

    Adds expected counts into ``counts`` (keys ``initial``, ``transitions``,
    ``emissions``, in parameter shapes) and writes ``p(z_t | x)`` into
    ``posteriors`` [B, L, h] when given. Returns per-sequence log-likelihoods (float64).
    """
    length = tokens.shape[1]
    factors = torch.empty(length, tokens.shape[0], hmm.num_states, dtype=hmm.dtype, device=hmm.device)
    alphas, log_normalizers = forward(hmm, tokens, emissions_out=factors)
    inverse_scales = torch.nan_to_num((-log_normalizers).exp(), posinf=0.0).to(hmm.dtype)   # 1 / c_t, [L, B]
    beta = torch.ones_like(alphas[0]) if length else None
    with gemm_precision(hmm):
        _backward(hmm, tokens, alphas, factors, inverse_scales, beta, counts, posteriors)
    return log_normalizers.sum(dim=0)


def _backward(hmm, tokens: Tensor, alphas: Tensor, factors: Tensor, inverse_scales: Tensor, beta: Tensor | None,
              counts: dict[str, Tensor] | None, posteriors: Tensor | None) -> None:
    """The backward recursion of :func:`forward_backward`, consuming ``alphas`` and ``factors``."""
    for t in range(tokens.shape[1] - 1, -1, -1):
        gamma = alphas[t].mul_(beta)          # alphas[t] is not needed after this step
        if posteriors is not None:
            posteriors[:, t] = gamma
        if counts is not None:
            _add_emission_counts(counts["emissions"][hmm.position_index(t)], tokens[:, t], gamma)
        if t == 0:
            if counts is not None:
                counts["initial"] += gamma.sum(dim=0)
            break
        transition = hmm.transition_matrix(t - 1)
        weighted = factors[t].mul_(beta).mul_(inverse_scales[t].unsqueeze(1))
        if counts is not None:
            counts["transitions"][hmm.position_index(t - 1)].addcmul_(transition, alphas[t - 1].T @ weighted)
        beta = weighted @ transition.T


def _add_emission_counts(emission_counts: Tensor, tokens: Tensor, gamma: Tensor) -> None:
    """``emission_counts[v] += sum of gamma rows whose token is v`` (missing tokens skipped)."""
    observed = tokens >= 0
    if not bool(observed.all()):
        tokens, gamma = tokens[observed], gamma[observed]
    emission_counts.index_add_(0, tokens, gamma)
