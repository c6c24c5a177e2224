"""The one M-step shared by every model in hmmlvd."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParameterGroup:
    """A tensor of categorical distributions whose entries sum to 1 along ``dim``."""

    values: Tensor
    dim: int
    entropy_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.entropy_weight >= 0:
            raise ValueError(f"entropy_weight must be >= 0, got {self.entropy_weight}")


@dataclass(frozen=True)
class GaussianGroup:
    """Univariate Gaussians: ``values[..., 0]`` are means and ``values[..., 1]`` standard deviations.

    Their counts are the weighted sufficient statistics ``[..., 3]`` = (Σw, Σw·x, Σw·x²); the
    M-step floors each standard deviation at ``min_std`` (a float or a tensor over ``values[..., 0]``).
    """

    values: Tensor
    min_std: float | Tensor


def normalize(counts: Tensor, dim: int = -1, pseudocount: float = 0.0) -> Tensor:
    """``(counts + pseudocount / n) / sum`` along ``dim``, where ``n = counts.shape[dim]``.

    Rows whose total is zero (no evidence and no pseudocount) come back as NaN;
    :func:`m_step` keeps the previous parameters for those rows.
    """
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    smoothed = counts + pseudocount / counts.shape[dim] if pseudocount > 0 else counts
    total = smoothed.sum(dim=dim, keepdim=True)
    return smoothed / total


def entropy_regularized_normalize(counts: Tensor, entropy_weight: float, dim: int = -1,
                                  tolerance: float = 1e-10, max_iterations: int = 100) -> Tensor:
    """``argmax_θ Σ_i n_i·log θ_i + τ·H(θ)`` over the simplex along ``dim`` (``n = counts >= 0``, ``τ = entropy_weight``).

    Entropy regularisation of Liu & Van den Broeck (NeurIPS 2021). The stationarity condition
    ``n_i/θ_i − τ·(log θ_i + 1) = λ`` gives, with ``u = (λ + τ)/τ``, ``log θ_i = w_i − u`` where
    ``w_i + log w_i = log(n_i/τ) + u`` (``w_i = 0`` when ``n_i = 0``). ``log Σ_i θ_i(u)`` is convex and
    decreasing in ``u``, so Newton's method converges monotonically from ``u = Σ_i n_i/τ`` (where
    ``Σθ >= 1``); each ``w_i`` is found by Newton on ``t = log w``
    (``e^t + t = z``, convex increasing), warm-started from the previous ``u``.
    Computed in float64 and returned in the dtype of ``counts``; rows summing to zero come back uniform.
    """
    if not entropy_weight > 0:
        raise ValueError(f"entropy_weight must be > 0, got {entropy_weight}")
    if bool((counts < 0).any()):
        raise ValueError("counts must be non-negative")
    n = counts.movedim(dim, -1).to(torch.float64)
    seen = n > 0
    log_ratio = torch.where(seen, n, torch.ones_like(n)).log() - math.log(entropy_weight)   # log(n_i/τ)
    u = n.sum(-1, keepdim=True) / entropy_weight          # Σθ(u) >= 1 here: w_i <= u gives θ_i >= n_i / Σn
    z = log_ratio + u
    t = torch.where(z > 1, z.clamp_min(1).log(), z)
    for _ in range(max_iterations):
        z = log_ratio + u
        t = _solve_exp_plus_identity(z, t, tolerance, max_iterations)
        w = torch.where(seen, t.exp(), torch.zeros_like(t))
        log_theta = w - u
        log_total = torch.logsumexp(log_theta, -1, keepdim=True)
        theta = log_theta.exp()
        slope = -(theta / (1 + w)).sum(-1, keepdim=True) / theta.sum(-1, keepdim=True)
        step = log_total / slope
        u = u - step
        if bool((step.abs() <= tolerance * (1 + u.abs())).all()):
            break
    theta = theta / theta.sum(-1, keepdim=True)
    return theta.to(counts.dtype).movedim(-1, dim)


def _solve_exp_plus_identity(z: Tensor, t: Tensor, tolerance: float, max_iterations: int) -> Tensor:
    """Solve ``e^t + t = z`` elementwise by Newton (convex increasing: monotone after at most one overshoot)."""
    for _ in range(max_iterations):
        step = (t.exp() + t - z) / (t.exp() + 1)
        t = t - step
        if bool((step.abs() <= tolerance * (1 + t.abs())).all()):
            break
    return t


def m_step(
    parameters: Tensor,
    counts: Tensor,
    *,
    pseudocount: float = 0.0,
    step_size: float = 1.0,
    dim: int = -1,
    overwrite_counts: bool = False,
    entropy_weight: float = 0.0,
) -> Tensor:
    """Return ``(1 - η)·θ + η·normalize(counts + pseudocount / n_children)``.

    ``η = step_size``; ``η = 1`` is full-batch EM (or the closed-form fit from
    complete data). Distributions whose counts total zero keep their old values.
    ``overwrite_counts=True`` computes in the memory of ``counts`` (no full-size
    temporaries; the counts are consumed), which matters for the [T, V, h] emissions.
    ``entropy_weight = τ > 0`` replaces the normalisation by the entropy-regularised maximiser of
    ``Σ_i (n_i + pseudocount/n_children)·log θ_i + τ·H(θ)`` (:func:`entropy_regularized_normalize`);
    ``τ`` is in the units of the counts.
    """
    if parameters.shape != counts.shape:
        raise ValueError(
            f"counts have shape {tuple(counts.shape)} but parameters have shape "
            f"{tuple(parameters.shape)}; accumulate counts with the model they update"
        )
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    if not entropy_weight >= 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    target = counts.to(dtype=parameters.dtype, device=parameters.device)
    if not overwrite_counts and target is counts:
        target = target.clone()
    totals = target.sum(dim=dim, keepdim=True).add_(pseudocount)
    if pseudocount > 0:
        target.add_(pseudocount / target.shape[dim])
    empty = totals == 0
    if entropy_weight > 0:
        target = entropy_regularized_normalize(target, entropy_weight, dim)
    else:
        target.div_(totals.masked_fill_(empty, 1.0))
    if bool(empty.any()):
        torch.where(empty, parameters, target, out=target)
    if step_size < 1.0:
        torch.lerp(parameters, target, step_size, out=target)
    return target


def gaussian_m_step(parameters: Tensor, counts: Tensor, *, min_std: float | Tensor, step_size: float = 1.0) -> Tensor:
    """Maximum-likelihood Gaussians from ``counts`` (Σw, Σw·x, Σw·x²), blended with the old ones.

    Mini-batch steps interpolate the moments ``E[x]`` and ``E[x²]`` with weight ``η = step_size``,
    which keeps every variance non-negative; Gaussians without any weight keep their values.
    """
    if counts.shape != (*parameters.shape[:-1], 3) or parameters.shape[-1] != 2:
        raise ValueError(f"Gaussian counts must have shape {(*parameters.shape[:-1], 3)} for parameters of "
                         f"shape {tuple(parameters.shape)} (mean, std); got {tuple(counts.shape)}")
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    counts = counts.to(dtype=parameters.dtype, device=parameters.device)
    weight = counts[..., 0]
    seen = weight > 0
    safe = torch.where(seen, weight, torch.ones_like(weight))
    old_mean, old_std = parameters[..., 0], parameters[..., 1]
    mean = torch.where(seen, counts[..., 1] / safe, old_mean)
    second = torch.where(seen, counts[..., 2] / safe, old_std ** 2 + old_mean ** 2)
    if step_size < 1.0:
        mean, second = (torch.lerp(old_mean, mean, step_size),
                        torch.lerp(old_std ** 2 + old_mean ** 2, second, step_size))
    floor = torch.as_tensor(min_std, dtype=parameters.dtype, device=parameters.device)
    std = (second - mean ** 2).clamp_min(0).sqrt().maximum(floor)
    return torch.stack([mean, std], dim=-1)


def apply_m_step(
    groups: dict[str, ParameterGroup | GaussianGroup],
    counts: dict[str, Tensor],
    *,
    pseudocount: float = 0.0,
    step_size: float = 1.0,
    overwrite_counts: bool = False,
) -> dict[str, Tensor]:
    """Run :func:`m_step` (or :func:`gaussian_m_step`) on every named group; returns the new parameter tensors.

    ``pseudocount`` smooths the categorical groups only; each categorical group's own
    ``entropy_weight`` regularises its M-step.
    """
    missing = set(groups) - set(counts)
    if missing:
        raise ValueError(f"no counts for parameter groups {sorted(missing)}")
    return {
        name: gaussian_m_step(group.values, counts[name], min_std=group.min_std, step_size=step_size)
        if isinstance(group, GaussianGroup) else
        m_step(group.values, counts[name], pseudocount=pseudocount, step_size=step_size,
               dim=group.dim, overwrite_counts=overwrite_counts, entropy_weight=group.entropy_weight)
        for name, group in groups.items()
    }
