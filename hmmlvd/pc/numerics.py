"""Exponentials of shifted log values that stay clear of subnormal numbers.

On the CPU both steps around such an exponential fall off a cliff near the bottom of the floating-point range:
torch's ``exp`` runs about 100x slower on arguments whose results underflow (below the smallest normal number,
``finfo.tiny``), and MKL's GEMMs run 50-200x slower when their inputs hold subnormal numbers. Circuits meet both:
the log-likelihoods of a trained circuit's alternatives spread over hundreds of nats.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor
from torch.nn import functional


@lru_cache(maxsize=None)
def _limits(dtype: torch.dtype) -> tuple[float, float]:
    """(floor, its exponential in ``dtype``): one nat above the log of the smallest normal number."""
    floor = math.log(torch.finfo(dtype).tiny) + 1.0
    return floor, torch.tensor(floor, dtype=dtype).exp().item()


def exp_normal(shifted: Tensor) -> Tensor:
    """``exp(shifted)`` (a new tensor, same shape) for log values ``shifted`` (at most 0, e.g. each minus its
    column's largest), with every result below e · ``finfo.tiny`` set to 0, so that no argument makes ``exp``
    underflow and no result is subnormal. ``-inf`` gives 0; NaN stays NaN."""
    floor, limit = _limits(shifted.dtype)
    return functional.threshold_(shifted.clamp_min(floor).exp_(), limit, 0.0)
