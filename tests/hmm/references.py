"""Independent references for the fast HMM code: brute force over paths and naive log-space."""
from __future__ import annotations

import itertools
import math

import torch


def path_log_joint(hmm, tokens, states) -> float:
    """log p(x, z) for one sequence, with missing tokens (-1) contributing factor 1."""
    total = math.log(hmm.initial[states[0]].item())
    for t, (token, state) in enumerate(zip(tokens, states)):
        if t > 0:
            total += math.log(hmm.transition_matrix(t - 1)[states[t - 1], state].item())
        if token >= 0:
            total += math.log(hmm.emission_matrix(t)[token, state].item())
    return total


def brute_force(hmm, tokens: list[int]):
    """Enumerate every hidden path: (log p(x), posteriors [L, h], expected counts dict)."""
    h, length = hmm.num_states, len(tokens)
    paths = list(itertools.product(range(h), repeat=length))
    log_joints = torch.tensor([path_log_joint(hmm, tokens, z) for z in paths], dtype=torch.float64)
    log_px = torch.logsumexp(log_joints, 0)
    weights = (log_joints - log_px).exp()
    posteriors = torch.zeros(length, h, dtype=torch.float64)
    counts = {name: torch.zeros_like(g.values, dtype=torch.float64) for name, g in hmm.parameter_groups().items()}
    for weight, z in zip(weights, paths):
        counts["initial"][z[0]] += weight
        for t in range(length):
            posteriors[t, z[t]] += weight
            if tokens[t] >= 0:
                counts["emissions"][hmm.position_index(t), tokens[t], z[t]] += weight
            if t > 0:
                counts["transitions"][hmm.position_index(t - 1), z[t - 1], z[t]] += weight
    return log_px.item(), posteriors, counts


def all_sequences(vocab_size: int, length: int):
    return [list(x) for x in itertools.product(range(vocab_size), repeat=length)]


def _log_emission(hmm, tokens: torch.Tensor, t: int) -> torch.Tensor:
    rows = hmm.emission_matrix(t).double().log()[tokens[:, t].clamp(min=0)]
    return torch.where((tokens[:, t] < 0).unsqueeze(1), torch.zeros_like(rows), rows)


def _log_alphas(hmm, tokens: torch.Tensor) -> list[torch.Tensor]:
    log_alpha = [hmm.initial.double().log().unsqueeze(0) + _log_emission(hmm, tokens, 0)]
    for t in range(1, tokens.shape[1]):
        log_a = hmm.transition_matrix(t - 1).double().log()
        log_alpha.append(torch.logsumexp(log_alpha[-1].unsqueeze(2) + log_a.unsqueeze(0), dim=1)
                         + _log_emission(hmm, tokens, t))
    return log_alpha


def log_space_forward_backward(hmm, tokens: torch.Tensor):
    """Naive logsumexp forward–backward in float64: (log p(x) [B], counts dict)."""
    batch, length = tokens.shape

    log_alpha = _log_alphas(hmm, tokens)
    log_px = torch.logsumexp(log_alpha[-1], dim=1)
    log_beta = [None] * length
    log_beta[-1] = torch.zeros_like(log_alpha[-1])
    for t in range(length - 2, -1, -1):
        log_a = hmm.transition_matrix(t).double().log()
        log_beta[t] = torch.logsumexp(log_a.unsqueeze(0) + (_log_emission(hmm, tokens, t + 1) + log_beta[t + 1]).unsqueeze(1), dim=2)
    counts = {name: torch.zeros_like(g.values, dtype=torch.float64) for name, g in hmm.parameter_groups().items()}
    for t in range(length):
        gamma = (log_alpha[t] + log_beta[t] - log_px.unsqueeze(1)).exp()
        if t == 0:
            counts["initial"] += gamma.sum(0)
        for b in range(batch):
            if tokens[b, t] >= 0:
                counts["emissions"][hmm.position_index(t), tokens[b, t]] += gamma[b]
        if t > 0:
            log_a = hmm.transition_matrix(t - 1).double().log()
            log_xi = (log_alpha[t - 1].unsqueeze(2) + log_a.unsqueeze(0)
                      + (_log_emission(hmm, tokens, t) + log_beta[t]).unsqueeze(1) - log_px.view(-1, 1, 1))
            counts["transitions"][hmm.position_index(t - 1)] += log_xi.exp().sum(0)
    return log_px, counts


def log_space_state_distribution(hmm, prefix: torch.Tensor) -> torch.Tensor:
    """``log p(z_{k+1} | x_1..x_k)`` [B, h] in float64 by the naive logsumexp forward recursion (k may be 0)."""
    if prefix.shape[1] == 0:
        return hmm.initial.double().log().expand(prefix.shape[0], -1)
    log_a = hmm.transition_matrix(prefix.shape[1] - 1).double().log()
    log_next = torch.logsumexp(_log_alphas(hmm, prefix)[-1].unsqueeze(2) + log_a.unsqueeze(0), dim=1)
    return log_next - torch.logsumexp(log_next, dim=1, keepdim=True)


def log_space_next_token_log_probs(hmm, prefix: torch.Tensor) -> torch.Tensor:
    """``log p(x_{k+1} = v | x_1..x_k)`` [B, V] in float64, naive logsumexp over hidden states."""
    log_emission = hmm.emission_matrix(prefix.shape[1]).double().log()                       # [V, h]
    return torch.logsumexp(log_space_state_distribution(hmm, prefix).unsqueeze(1) + log_emission.unsqueeze(0), dim=2)


def brute_next_token_prob(hmm, context: list[int], token: int) -> float:
    """``p(x_{k+1} = token | x_1..x_k = context)`` as a ratio of two path enumerations."""
    log_context = brute_force(hmm, context)[0] if context else 0.0
    return math.exp(brute_force(hmm, context + [token])[0] - log_context)
