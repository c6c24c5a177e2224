"""Perplexity of an HMM on a token stream under the two named protocols of DESIGN.md.

* ``chunk``: disjoint windows of ``seq_len`` tokens (the last one padded with missing
  tokens); perplexity = exp(-sum log p(window) / #tokens).
* ``sliding``: every token predicted from the previous <= seq_len - 1 tokens: the first
  window contributes all its positions, every later stride-1 window its last position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data.windows import chunk_windows
from .hmm import sliding_log_probs

PROTOCOLS = ("chunk", "sliding")


@dataclass(frozen=True)
class Perplexity:
    """One perplexity figure and what it was measured on."""

    protocol: str
    split: str
    perplexity: float
    log_likelihood: float
    num_tokens: int

    def describe(self, num_states: int, init: str) -> str:
        return (f"{self.split} perplexity ({self.protocol} protocol, h={num_states}, init={init}): "
                f"{self.perplexity:.2f}  [{self.num_tokens} tokens]")


def _batched_sum(hmm, batches: Tensor, batch_size: int, score, desc: str, progress: bool) -> float:
    total = 0.0
    with torch.no_grad():
        for start in tqdm(range(0, len(batches), batch_size), desc=desc, unit="batch", disable=not progress):
            total += score(hmm.forward(batches[start:start + batch_size]).log_normalizers).sum().item()
    return total


def log_likelihood(hmm, stream: Tensor, protocol: str, batch_size: int = 1024, progress: bool = True,
                   desc: str = "") -> float:
    """Total log-likelihood of every token of ``stream`` under ``protocol`` (natural log)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(stream, Tensor) or stream.dim() != 1 or stream.dtype != torch.long or len(stream) == 0:
        raise ValueError("stream must be a non-empty 1-D LongTensor of token ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if protocol == "chunk":
        return _batched_sum(hmm, chunk_windows(stream, hmm.seq_len), batch_size,
                            lambda normalizers: normalizers.sum(0), desc or "chunk perplexity", progress)
    with torch.no_grad():
        return sliding_log_probs(hmm, stream, batch_size, progress, desc or "sliding perplexity").sum().item()


def perplexity(hmm, stream: Tensor, protocol: str, split: str = "test", batch_size: int = 1024,
               progress: bool = True) -> Perplexity:
    """The perplexity of ``stream`` (a split's token ids) under ``protocol``."""
    total = log_likelihood(hmm, stream, protocol, batch_size, progress,
                           desc=f"{protocol} perplexity on {split} (h={hmm.num_states})")
    return Perplexity(protocol, split, math.exp(-total / len(stream)), total, len(stream))
