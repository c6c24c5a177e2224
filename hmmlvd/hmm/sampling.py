"""Ancestral sampling from an HMM, optionally continuing given prefixes."""
from __future__ import annotations

import torch
from torch import Tensor


def _draw_tokens(hmm, t: int, states: Tensor, generator) -> Tensor:
    probabilities = hmm.emission_matrix(t).index_select(1, states).T    # [N, V]
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


def sample(hmm, num_samples: int, length: int | None = None, prefix: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Sequences [N, length]; given ``prefix`` [N, k] (no missing ids) the first k tokens are kept
    and the rest drawn from ``p(x_{k+1:} | prefix)``."""
    length = hmm.seq_len if length is None else length
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if length < 1 or (not hmm.config.homogeneous and length > hmm.seq_len):
        raise ValueError(f"length must be in [1, {hmm.seq_len}], got {length}")
    out = torch.empty(num_samples, length, dtype=torch.long, device=hmm.device)
    start = 0
    with torch.no_grad():
        if prefix is not None:
            prefix = hmm.check_tokens(prefix, allow_empty=True)
            if prefix.shape[0] != num_samples:
                raise ValueError(f"prefix has {prefix.shape[0]} rows but num_samples={num_samples}")
            if bool((prefix < 0).any()):
                raise ValueError("prefix must not contain missing tokens (-1)")
            start = prefix.shape[1]
            if start > length:
                raise ValueError(f"prefix of length {start} is longer than the requested length {length}")
            out[:, :start] = prefix
        if start == 0:
            states = torch.multinomial(hmm.initial.expand(num_samples, -1), 1, generator=generator).squeeze(1)
            out[:, 0] = _draw_tokens(hmm, 0, states, generator)
            start = 1
        else:
            filtered = hmm.forward(prefix).alphas[-1]
            states = torch.multinomial(filtered, 1, generator=generator).squeeze(1)
        for t in range(start, length):
            transition_rows = hmm.transition_matrix(t - 1).index_select(0, states)
            states = torch.multinomial(transition_rows, 1, generator=generator).squeeze(1)
            out[:, t] = _draw_tokens(hmm, t, states, generator)
    return out
