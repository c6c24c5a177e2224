"""Sampling from an HMM: whole sequences (ancestral), and continuations drawn one token at a time
from the next-token distribution, with temperature and top-k."""
from __future__ import annotations

import torch
from torch import Tensor

from .filtering import filter_step, next_token_log_probs


def check_sampling_options(temperature: float, top_k: int | None) -> None:
    """Raise ValueError unless ``temperature >= 0`` and ``top_k`` is None or a positive integer."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive integer, got {top_k!r}")


def choose_tokens(log_weights: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    """One token per row of unnormalised log-weights [B, V] (returns [B]): greedy when temperature is 0,
    otherwise sampled from softmax(log_weights / temperature) restricted to the top_k tokens."""
    check_sampling_options(temperature, top_k)
    if temperature == 0:
        return log_weights.argmax(dim=1)
    if top_k is not None and top_k < log_weights.shape[1]:
        kth = log_weights.topk(top_k, dim=1).values[:, -1:]
        log_weights = log_weights.masked_fill(log_weights < kth, float("-inf"))
    probabilities = torch.softmax(log_weights / temperature, dim=1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


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
            prefix = hmm.check_prefix(prefix)
            if prefix.shape[0] != num_samples:
                raise ValueError(f"prefix has {prefix.shape[0]} rows but num_samples={num_samples}")
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


def sample_continuations(hmm, prefix: Tensor, num_new_tokens: int, temperature: float = 1.0,
                         top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """``num_new_tokens`` tokens [B, n] after each row of ``prefix`` [B, k] (no missing ids), each drawn from
    the next-token distribution reshaped by ``temperature`` (0: greedy) and ``top_k``.

    Inside the window the state distribution is filtered one token at a time. Once the context fills a
    non-homogeneous window (``seq_len``), each token is predicted from the previous ``seq_len - 1`` tokens at
    the last window position (the sliding protocol); so ``k`` and ``n`` may exceed the window.
    """
    check_sampling_options(temperature, top_k)
    if isinstance(num_new_tokens, bool) or not isinstance(num_new_tokens, int) or num_new_tokens < 1:
        raise ValueError(f"num_new_tokens must be a positive integer, got {num_new_tokens!r}")
    texts = hmm.check_prefix(prefix, any_length=True)
    window = None if hmm.config.homogeneous else hmm.seq_len
    length, state_probs = texts.shape[1], None
    for _ in range(num_new_tokens):
        position = texts.shape[1]
        if window is not None and position >= window:
            state_probs = hmm.state_distribution(texts[:, position - window + 1:]).double()
            position = window - 1
        elif state_probs is None:
            state_probs = hmm.state_distribution(texts).double()
        tokens = choose_tokens(next_token_log_probs(hmm, state_probs, position), temperature, top_k, generator)
        texts = torch.cat([texts, tokens.unsqueeze(1)], dim=1)
        state_probs = filter_step(hmm, state_probs, tokens, position)
    return texts[:, length:]
