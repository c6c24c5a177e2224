"""One bottom-up walk over a compiled circuit's layers, parametrised by the semiring (both in log space).

* :class:`SumProduct` – ``log Σ_c θ_uc · exp(child_c)``: likelihoods, and what the backward pass reuses;
* :class:`MaxProduct` – ``max_c log θ_uc + child_c``: the best completion of every unit (MPE, Viterbi).

Products add their children's log values in both, so only the input and sum steps differ.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .evidence import Evidence
from .layers import InputGroup, LayerPlan, Semiring, SumGroup
from .numerics import exp_normal


class SumProduct:
    """Sum-product in log space (shifted by each column's max child); keeps caches for the backward pass."""

    def __init__(self) -> None:
        self.input_cache: dict[int, tuple] = {}                        # id(input group) -> its add_counts cache
        self.sum_cache: dict[int, tuple[Tensor, Tensor]] = {}          # id(group) -> (probs [n,C,B], sums [n,U,B])

    def input_values(self, group: InputGroup, evidence: Evidence) -> Tensor:
        values, self.input_cache[id(group)] = group.log_values(evidence)
        return values

    def sum_values(self, group: SumGroup, children: Tensor) -> Tensor:
        """``[n, U, B]`` log sums of the children's log values ``[n, C, B]``."""
        shift = children.amax(1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        probs = exp_normal(children - shift)
        sums = torch.bmm(group.params, probs)
        self.sum_cache[id(group)] = (probs, sums)
        return sums.log() + shift


class MaxProduct:
    """Max-product in log space; ``chunk_units`` bounds the ``[n, U, C, batch chunk]`` intermediate."""

    def __init__(self, chunk_units: int = 1 << 22) -> None:
        self.chunk_units = chunk_units

    def input_values(self, group: InputGroup, evidence: Evidence) -> Tensor:
        return group.best_log_values(evidence)

    def sum_values(self, group: SumGroup, children: Tensor) -> Tensor:
        """``[n, U, B]`` best log score over the children ``[n, C, B]`` of each sum unit."""
        log_weights = group.params.clamp_min(torch.finfo(group.params.dtype).tiny).log()   # [n, U, C]
        n, units, fan_in = log_weights.shape
        step = max(1, self.chunk_units // max(n * units * fan_in, 1))
        return torch.cat([(log_weights[..., None] + children[:, None, :, s:s + step]).amax(2)
                          for s in range(0, children.shape[2], step)], dim=2)


def evaluate(plan: LayerPlan, evidence: Evidence, semiring: Semiring, *, dtype: torch.dtype,
             device: torch.device) -> Tensor:
    """Log value of every unit ``[num_rows, B]`` for validated ``evidence``, bottom-up in ``semiring``."""
    values = torch.empty(plan.num_rows, len(evidence), dtype=dtype, device=device)
    values[0] = 0.0                                                    # the padding row; all others are written
    for group in plan.input_groups:
        values[group.start:group.start + len(group)] = semiring.input_values(group, evidence)
    for layer in plan.layers:
        layer.evaluate(values, semiring)
    return values
