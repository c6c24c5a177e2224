"""Forward filtering one token at a time, and the next-token distribution of a filtered state.

A *state distribution at position t* is ``p(z_t | x_<t)`` [B, h]: what the HMM believes about the
hidden state before reading ``x_t``. :func:`state_distribution` gives it for a whole prefix,
:func:`filter_step` moves it past one more token, and :func:`next_token_log_probs` turns it into
``log p(x_t = v | x_<t)``. Generation, constrained generation and the logits processor all use these.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import inference


def _check_position(hmm, t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or t < 0 or (not hmm.config.homogeneous and t >= hmm.seq_len):
        bound = "" if hmm.config.homogeneous else f" below seq_len={hmm.seq_len}"
        raise ValueError(f"position t must be a non-negative integer{bound}, got {t!r}")


def _check_state_probs(hmm, state_probs: Tensor) -> None:
    if not isinstance(state_probs, Tensor) or state_probs.dim() != 2 or state_probs.shape[1] != hmm.num_states:
        got = tuple(state_probs.shape) if isinstance(state_probs, Tensor) else type(state_probs).__name__
        raise ValueError(f"state_probs must be a tensor [batch, num_states={hmm.num_states}], got {got}")


def state_distribution(hmm, prefix: Tensor) -> Tensor:
    """``p(z_{k+1} | x_1..x_k)`` [B, h] (model dtype) for a prefix [B, k] with ``k < seq_len`` (k may be 0;
    missing ids -1 are marginalised)."""
    prefix = hmm.check_tokens(prefix, allow_empty=True)
    k = prefix.shape[1]
    if not hmm.config.homogeneous and k >= hmm.seq_len:
        raise ValueError(f"a prefix of length {k} leaves no position to predict in a window of {hmm.seq_len}")
    if k == 0:
        return hmm.initial.expand(prefix.shape[0], -1)
    with torch.no_grad():
        alphas = inference.forward(hmm, prefix).alphas
        return alphas[-1] @ hmm.transition_matrix(k - 1)


def filter_step(hmm, state_probs: Tensor, tokens: Tensor, t: int) -> Tensor:
    """``p(z_{t+1} | x_<=t)`` [B, h] (float64) from ``state_probs = p(z_t | x_<t)`` [B, h] and the token ids
    ``tokens`` [B] read at position ``t``.

    At the last position of a non-homogeneous window nothing follows, so the posterior ``p(z_t | x_<=t)``
    is returned instead. A row whose token has probability 0 comes back as zeros. The product with the
    transition matrix runs in the model's dtype (on the normalised posterior, so nothing underflows that matters).
    """
    _check_state_probs(hmm, state_probs)
    _check_position(hmm, t)
    if not isinstance(tokens, Tensor) or tuple(tokens.shape) != (state_probs.shape[0],):
        got = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a tensor [batch={state_probs.shape[0]}] of token ids, got {got}")
    posterior = state_probs.double() * hmm.emission_matrix(t).index_select(0, tokens).double()
    posterior = posterior / posterior.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    if not hmm.config.homogeneous and t + 1 >= hmm.seq_len:
        return posterior            # the window ends here: nothing follows
    return (posterior.to(hmm.dtype) @ hmm.transition_matrix(t)).double()


def next_token_log_probs(hmm, state_probs: Tensor, t: int) -> Tensor:
    """``log p(x_t = v | x_<t)`` [B, V] (float64) from ``state_probs = p(z_t | x_<t)`` [B, h].

    The product with the emission table runs in the model's dtype; the log is taken in float64.
    """
    _check_state_probs(hmm, state_probs)
    _check_position(hmm, t)
    with torch.no_grad():
        probabilities = state_probs.to(hmm.dtype) @ hmm.emission_matrix(t).T
        return probabilities.double().clamp_min(0).log()
