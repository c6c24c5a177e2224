"""Counts of fully observed (tokens, hidden states): the input of LVD's closed-form fit."""
from __future__ import annotations

import torch
from torch import Tensor


def complete_data_counts(hmm, tokens: Tensor, states: Tensor) -> dict[str, Tensor]:
    """Counts of ``z_1``, ``(z_t, z_{t+1})`` and ``(z_t, x_t)`` in the shapes of ``hmm``'s parameters.

    ``tokens`` and ``states`` are [N, L] with ``L <= seq_len``; tokens equal to -1 are
    skipped in the emission counts.
    """
    tokens = hmm.check_tokens(tokens)
    if not isinstance(states, Tensor) or states.shape != tokens.shape:
        raise ValueError(f"states must be a tensor shaped like tokens {tuple(tokens.shape)}, "
                         f"got {tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__}")
    states = states.to(device=hmm.device, dtype=torch.long)
    h, v = hmm.num_states, hmm.vocab_size
    if states.numel() and (int(states.min()) < 0 or int(states.max()) >= h):
        raise ValueError(f"hidden states must be in [0, {h}), found [{int(states.min())}, {int(states.max())}]")
    counts = hmm.zero_counts()
    length = tokens.shape[1]
    positions = torch.tensor([hmm.position_index(t) for t in range(length)], device=hmm.device)

    counts["initial"] += torch.bincount(states[:, 0], minlength=h).to(hmm.dtype)
    if length > 1:
        flat = (positions[:-1] * h + states[:, :-1]) * h + states[:, 1:]
        counts["transitions"].view(-1).index_add_(
            0, flat.reshape(-1), torch.ones(flat.numel(), dtype=hmm.dtype, device=hmm.device))
    observed = tokens >= 0
    flat = (positions * v + tokens.clamp(min=0)) * h + states
    flat = flat[observed]
    counts["emissions"].view(-1).index_add_(0, flat, torch.ones(flat.numel(), dtype=hmm.dtype, device=hmm.device))
    return counts
