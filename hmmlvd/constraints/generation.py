"""p(constraint | prefix) and exact constrained sampling under an HMM."""
from __future__ import annotations

import torch
from torch import Tensor

from ..hmm import check_sampling_options, choose_tokens, filter_step
from .dfa import DFA
from .inference import ConstraintTables


def unsatisfiable_reason(dfa: DFA, num_new_tokens: int) -> str:
    """Why a constraint has probability 0: the DFA itself, or the HMM."""
    if dfa.is_empty():
        return "the DFA accepts no string at all (e.g. contradictory constraints)"
    states = {dfa.initial}
    for _ in range(num_new_tokens):
        states = set().union(*(dfa.successors(q) for q in states))
    if not states & dfa.accepting:
        return f"no string of exactly {num_new_tokens} tokens satisfies the DFA; change max_new_tokens"
    return "the HMM gives every satisfying continuation probability 0"


def _tables_and_states(hmm, dfa: DFA, prefix: Tensor, num_new_tokens: int) -> tuple[ConstraintTables, Tensor]:
    start = prefix.shape[1]
    tables = ConstraintTables(hmm, dfa, start, start + num_new_tokens)
    return tables, hmm.state_distribution(prefix).double()


def constraint_log_prob(hmm, dfa: DFA, prefix: Tensor, num_new_tokens: int) -> Tensor:
    """``log p(the DFA accepts x_{k+1..k+n} | x_1..x_k)`` per row of ``prefix`` [B, k] (float64 [B]).

    The DFA reads only the ``n = num_new_tokens`` tokens after the prefix, and all ``k + n``
    positions must fit in the HMM window.
    """
    prefix = hmm.check_prefix(prefix)
    tables, state_probs = _tables_and_states(hmm, dfa, prefix, num_new_tokens)
    with torch.no_grad():
        log_joint = tables.next_token_log_joint(prefix.shape[1], state_probs, [dfa.initial] * prefix.shape[0])
    return torch.logsumexp(log_joint, dim=1)


def sample_constrained(hmm, dfa: DFA, prefix: Tensor, num_new_tokens: int, *, temperature: float = 1.0,
                       top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Continuations [B, n] of ``prefix`` [B, k] that the DFA accepts, with probability 1.

    With ``temperature=1`` and ``top_k=None`` they are exact samples of ``p(x_{k+1..k+n} | prefix,
    constraint)``; other settings reshape each constrained next-token distribution (temperature 0
    is greedy) and still only pick tokens from which the constraint remains satisfiable.
    Raises ValueError when the constraint has probability 0 for some row.
    """
    check_sampling_options(temperature, top_k)
    prefix = hmm.check_prefix(prefix)
    tables, state_probs = _tables_and_states(hmm, dfa, prefix, num_new_tokens)
    batch, start = prefix.shape
    dfa_states = [dfa.initial] * batch
    out = torch.empty(batch, num_new_tokens, dtype=torch.long, device=hmm.device)
    with torch.no_grad():
        for step in range(num_new_tokens):
            log_joint = tables.next_token_log_joint(start + step, state_probs, dfa_states)
            if step == 0:
                impossible = torch.isneginf(log_joint.amax(dim=1)).nonzero().flatten().tolist()
                if impossible:
                    raise ValueError(f"the constraint cannot be satisfied after prefix rows {impossible} in "
                                     f"{num_new_tokens} new tokens: {unsatisfiable_reason(dfa, num_new_tokens)}")
            tokens = choose_tokens(log_joint, temperature, top_k, generator)
            out[:, step] = tokens
            dfa_states = [dfa.step(q, v) for q, v in zip(dfa_states, tokens.tolist())]
            state_probs = filter_step(hmm, state_probs, tokens, start + step)
    return out
