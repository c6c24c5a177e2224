"""Input layers of a compiled circuit: categorical and Gaussian units, each kind grouped into one tensor.

A group owns rows ``start : start + len(group)`` of the value buffer and answers the four things
the circuit asks of its leaves: log values for a batch of evidence, expected counts from the
flows, max-product values, and values for missing variables when sampling or decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..em import GaussianGroup, ParameterGroup
from .evidence import Evidence
from .nodes import CategoricalInputNodes, GaussianInputNodes

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def choose(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """Argmax of ``logits`` along the last dim, or a sample ∝ ``exp(logits)`` (Gumbel-max) with ``generator``."""
    if generator is not None:
        uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).to(logits.device)
        logits = logits - torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return logits.argmax(-1)


@dataclass
class CategoricalInputGroup:
    """Categorical units with the same number of categories: ``params`` [N, K]."""

    start: int
    variables: Tensor        # [N] variable of each unit
    params: Tensor
    fixed: bool
    nodes: list[CategoricalInputNodes]

    def __len__(self) -> int:
        return len(self.variables)

    def _log_params(self) -> Tensor:
        return self.params.clamp_min(torch.finfo(self.params.dtype).tiny).log()

    def log_values(self, evidence: Evidence) -> tuple[Tensor, tuple]:
        """``log p(evidence_v | unit)`` ``[N, B]`` (0 where missing) and a cache for :meth:`add_counts`."""
        if evidence.soft is not None:
            weights = evidence.soft.index_select(1, self.variables)[..., :self.params.shape[1]]   # [B, N, K]
            mass = (weights * self.params).sum(-1)                                               # [B, N]
            return mass.clamp_min(torch.finfo(mass.dtype).tiny).log().T, ("soft", weights, mass)
        states = evidence.ids_by_variable.index_select(0, self.variables)                                  # [N, B]
        observed = states >= 0
        states = states.clamp_min(0)
        return torch.gather(self._log_params(), 1, states).masked_fill_(~observed, 0.0), ("hard", states, observed)

    def add_counts(self, cache: tuple, unit_flows: Tensor, counts: Tensor) -> None:
        """Add expected counts ``[N, K]``; missing values add nothing, soft evidence splits its flow."""
        if cache[0] == "soft":
            _, weights, mass = cache
            ratio = unit_flows.T / mass.clamp_min(torch.finfo(mass.dtype).tiny)                  # [B, N]
            counts += (self.params * torch.einsum("bn,bnk->nk", ratio, weights)).to(counts.dtype)
            return
        _, states, observed = cache
        counts.scatter_add_(1, states, (unit_flows * observed).to(counts.dtype))

    def zero_counts(self) -> Tensor:
        return torch.zeros_like(self.params)

    def parameter_group(self) -> ParameterGroup:
        return ParameterGroup(self.params, 1)

    def best_log_values(self, evidence: Evidence) -> Tensor:
        """Max-product leaf values ``[N, B]``: the observed log-probability, or the best one where missing."""
        states = evidence.ids_by_variable.index_select(0, self.variables)
        log_params = self._log_params()
        best = log_params.amax(1, keepdim=True).expand_as(states)
        return torch.where(states < 0, best, torch.gather(log_params, 1, states.clamp_min(0)))

    def complete(self, units: Tensor, generator: torch.Generator | None) -> Tensor:
        """A category for each unit in ``units``: sampled with ``generator``, else the mode."""
        return choose(self._log_params()[units], generator)


@dataclass
class GaussianInputGroup:
    """Gaussian units: ``params`` [N, 2] = (mean, std), each std floored at ``min_std`` [N] by EM."""

    start: int
    variables: Tensor
    params: Tensor
    min_std: Tensor
    fixed: bool
    nodes: list[GaussianInputNodes]

    def __len__(self) -> int:
        return len(self.variables)

    def log_values(self, evidence: Evidence) -> tuple[Tensor, tuple]:
        """Log densities ``[N, B]`` (0 where missing) and a cache for :meth:`add_counts`."""
        values = evidence.values_by_variable.index_select(0, self.variables)                              # [N, B]
        observed = ~torch.isnan(values)
        values = torch.where(observed, values, torch.zeros_like(values))
        mean, std = self.params[:, :1], self.params[:, 1:]
        logs = -0.5 * ((values - mean) / std) ** 2 - std.log() - LOG_SQRT_2PI
        return logs.masked_fill_(~observed, 0.0), (values, observed)

    def add_counts(self, cache: tuple, unit_flows: Tensor, counts: Tensor) -> None:
        """Add the weighted sufficient statistics (Σw, Σw·x, Σw·x²) ``[N, 3]``."""
        values, observed = cache
        weights = unit_flows * observed
        counts += torch.stack([weights.sum(1), (weights * values).sum(1), (weights * values ** 2).sum(1)],
                              dim=1).to(counts.dtype)

    def zero_counts(self) -> Tensor:
        return torch.zeros(len(self), 3, dtype=self.params.dtype, device=self.params.device)

    def parameter_group(self) -> GaussianGroup:
        return GaussianGroup(self.params, self.min_std)

    def best_log_values(self, evidence: Evidence) -> Tensor:
        """The observed log density, or the density at the mean where missing."""
        logs, (_, observed) = self.log_values(evidence)
        peak = (-self.params[:, 1:].log() - LOG_SQRT_2PI).expand_as(logs)
        return torch.where(observed, logs, peak)

    def complete(self, units: Tensor, generator: torch.Generator | None) -> Tensor:
        """A value for each unit in ``units``: drawn from its Gaussian with ``generator``, else its mean."""
        mean, std = self.params[units, 0], self.params[units, 1]
        if generator is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + std * noise
