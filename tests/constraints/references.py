"""Independent references for constrained inference: brute force over every sequence and hidden
path, and a naive forward pass over (DFA state, HMM state) with a dense DFA table."""
from __future__ import annotations

import itertools

import torch


def all_strings(vocab_size: int, max_length: int) -> list[tuple[int, ...]]:
    """Every token string of length 0..max_length."""
    return [s for n in range(max_length + 1) for s in itertools.product(range(vocab_size), repeat=n)]


def sequence_probabilities(hmm, length: int) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """``(sequences, p(x_1..x_length))`` for every sequence, summing the joint over every hidden path."""
    sequences = list(itertools.product(range(hmm.vocab_size), repeat=length))
    paths = torch.tensor(list(itertools.product(range(hmm.num_states), repeat=length)))  # [P, L]
    tokens = torch.tensor(sequences)                                                       # [S, L]
    log_joint = hmm.initial.double().log()[paths[:, 0]].unsqueeze(0).expand(len(sequences), -1).clone()
    for t in range(length):
        log_emission = hmm.emission_matrix(t).double().log()                              # [V, h]
        log_joint += log_emission[tokens[:, t]][:, paths[:, t]]
        if t > 0:
            log_joint += hmm.transition_matrix(t - 1).double().log()[paths[:, t - 1], paths[:, t]].unsqueeze(0)
    return sequences, log_joint.exp().sum(dim=1)


def brute_constraint_prob(table, dfa, prefix: tuple[int, ...], num_new_tokens: int) -> float:
    """p(DFA accepts the num_new_tokens tokens after prefix | prefix), by enumeration.

    ``table`` is ``sequence_probabilities(hmm, length)`` for any ``length >= len(prefix) + num_new_tokens``
    (later positions are summed out).
    """
    sequences, probs = table
    k = len(prefix)
    keep = [i for i, s in enumerate(sequences) if s[:k] == tuple(prefix)]
    accepted = [i for i in keep if dfa.accepts(sequences[i][k:k + num_new_tokens])]
    return float(probs[accepted].sum() / probs[keep].sum())


def brute_constrained_distribution(hmm, dfa, prefix: tuple[int, ...], num_new_tokens: int):
    """``(continuations, p(continuation | prefix, constraint))`` over all continuations."""
    sequences, probs = sequence_probabilities(hmm, len(prefix) + num_new_tokens)
    k = len(prefix)
    keep = [i for i, s in enumerate(sequences) if s[:k] == tuple(prefix)]
    weights = torch.tensor([float(probs[i]) if dfa.accepts(sequences[i][k:]) else 0.0 for i in keep],
                           dtype=torch.float64)
    return [sequences[i][k:] for i in keep], weights / weights.sum()


def dense_table(dfa) -> torch.Tensor:
    """The DFA's transition function as a dense [Q, V] table."""
    return torch.tensor([[dfa.step(q, v) for v in range(dfa.vocab_size)] for q in range(dfa.num_states)])


def naive_constraint_prob(hmm, dfa, prefix: list[int], num_new_tokens: int) -> float:
    """Forward pass over (DFA state, HMM state) pairs, token by token, with a dense DFA table (float64)."""
    table = dense_table(dfa)
    state = hmm.initial.double()
    for t, token in enumerate(prefix):
        state = state * hmm.emission_matrix(t)[token].double()
        state = (state / state.sum()) @ hmm.transition_matrix(t).double()
    joint = torch.zeros(dfa.num_states, hmm.num_states, dtype=torch.float64)   # [q, i]: p(q, z_t = i | prefix)
    joint[dfa.initial] = state
    start = len(prefix)
    for t in range(start, start + num_new_tokens):
        emission = hmm.emission_matrix(t).double()
        moved = torch.zeros_like(joint)
        for token in range(dfa.vocab_size):
            moved.index_add_(0, table[:, token], joint * emission[token])
        joint = moved @ hmm.transition_matrix(t).double() if t + 1 < start + num_new_tokens else moved
    return float(joint[sorted(dfa.accepting)].sum())


def empirical_frequencies(samples, sequences) -> torch.Tensor:
    """Relative frequency of each of ``sequences`` among the rows of ``samples``."""
    index = {tuple(s): i for i, s in enumerate(sequences)}
    counts = torch.zeros(len(sequences), dtype=torch.float64)
    rows = samples.tolist() if isinstance(samples, torch.Tensor) else samples
    for row in rows:
        counts[index[tuple(row)]] += 1
    return counts / len(rows)
