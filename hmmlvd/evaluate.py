"""Perplexity of an HMM on a token stream under the two named protocols of DESIGN.md.

* ``chunk``: disjoint windows of ``seq_len`` tokens (the last one padded with missing
  tokens); perplexity = exp(-sum log p(window) / #tokens).
* ``sliding``: every token predicted from the previous <= seq_len - 1 tokens: the first
  window contributes all its positions, every later stride-1 window its last position.

Under ``torch.distributed`` every rank passes the whole stream, scores its contiguous part of the
windows, and the log-likelihoods are summed across ranks: every rank returns the same figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .data.windows import chunk_windows
from .distributed import rank_and_world_size, shard, shard_bounds, sum_across_ranks
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


def _sliding_part(hmm, stream: Tensor, start: int, stop: int, batch_size: int, progress: bool, desc: str) -> float:
    """Sum of the sliding-protocol log-probabilities of tokens ``start..stop-1`` (``start`` is 0 or at least
    ``seq_len``, so the tokens before ``seq_len`` all belong to the part that starts at 0)."""
    if start >= stop:
        return 0.0
    if start == 0:
        return sliding_log_probs(hmm, stream[:stop], batch_size, progress, desc).sum().item()
    context = hmm.seq_len - 1        # the first window of the part predicts its last token only
    return sliding_log_probs(hmm, stream[start - context:stop], batch_size, progress, desc)[context:].sum().item()


def log_likelihood(hmm, stream: Tensor, protocol: str, batch_size: int = 1024, progress: bool = True,
                   desc: str = "") -> float:
    """Total log-likelihood of every token of ``stream`` under ``protocol`` (natural log), sharded across
    ranks under ``torch.distributed``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(stream, Tensor) or stream.dim() != 1 or stream.dtype != torch.long or len(stream) == 0:
        raise ValueError("stream must be a non-empty 1-D LongTensor of token ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank = rank_and_world_size()[0]
    progress = progress and rank == 0
    if protocol == "chunk":
        part = _batched_sum(hmm, shard(chunk_windows(stream, hmm.seq_len)), batch_size,
                            lambda normalizers: normalizers.sum(0), desc or "chunk perplexity", progress)
    else:
        # contiguous token ranges after the first window; rank 0 also takes the first window
        head = min(hmm.seq_len, len(stream))
        first, last = shard_bounds(len(stream) - head)
        start, stop = (0 if rank == 0 else head + first), head + last
        with torch.no_grad():
            part = _sliding_part(hmm, stream, start, stop, batch_size, progress, desc or "sliding perplexity")
    total = torch.tensor(part, dtype=torch.float64)
    sum_across_ranks([total])
    return total.item()


def windows_perplexity(hmm, windows: Tensor, split: str = "test", batch_size: int = 1024,
                       progress: bool = True) -> Perplexity:
    """The perplexity of fixed-length sequences ``windows`` [N, T] scored one by one (the ``chunk`` protocol on
    independent sequences, such as a causal LM's samples): exp(-sum log p(window) / #tokens), sharded across
    ranks under ``torch.distributed``."""
    if not isinstance(windows, Tensor) or windows.dim() != 2 or windows.dtype != torch.long or windows.numel() == 0:
        raise ValueError("windows must be a non-empty [N, T] LongTensor of token ids")
    progress = progress and rank_and_world_size()[0] == 0
    total = torch.tensor(_batched_sum(hmm, shard(windows), batch_size, lambda normalizers: normalizers.sum(0),
                                      f"chunk perplexity on {split} (h={hmm.num_states})", progress),
                         dtype=torch.float64)
    sum_across_ranks([total])
    return Perplexity("chunk", split, math.exp(-total.item() / windows.numel()), total.item(), windows.numel())


def perplexity(hmm, stream: Tensor, protocol: str, split: str = "test", batch_size: int = 1024,
               progress: bool = True) -> Perplexity:
    """The perplexity of ``stream`` (a split's token ids) under ``protocol``."""
    total = log_likelihood(hmm, stream, protocol, batch_size, progress,
                           desc=f"{protocol} perplexity on {split} (h={hmm.num_states})")
    return Perplexity(protocol, split, math.exp(-total / len(stream)), total, len(stream))
