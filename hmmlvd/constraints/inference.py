"""Exact inference for an HMM intersected with a DFA.

For a window end ``end`` and positions ``t < end``, define the *future table*

    future[t][q, i] = p(the DFA, in state q before reading x_t, accepts x_t .. x_{end-1} | z_{t-1} = i)

with ``future[end][q, i] = [q accepting]``. With edge-aggregated emissions
``agg_t[e, i] = sum_{v in tokens(e)} p(x_t = v | z_t = i)`` for every DFA edge ``e = (a -> b)``,

    backward_t[a, i] = sum_{e = (a -> b)} agg_t[e, i] * future[t+1][b, i]
    future[t]        = backward_t @ transition(t-1).T

so one step costs an edge gather plus one ``[Q, h] @ [h, h]`` matmul. The tables are rescaled
by their maximum each step (log scales are kept in float64), so long horizons do not underflow.
A token ``v`` read at position ``t`` from DFA state ``q`` then has the exact joint weight

    p(x_t = v, constraint | x_<t) = sum_i p(z_t = i | x_<t) p(x_t = v | z_t = i) future[t+1][delta(q, v), i]

which gives p(constraint | prefix), the constrained next-token distribution and exact sampling.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from .dfa import DFA


def check_window(hmm, prefix_length: int, num_new_tokens: int) -> None:
    """Raise ValueError unless ``prefix_length + num_new_tokens`` positions fit in the HMM's window."""
    if isinstance(num_new_tokens, bool) or not isinstance(num_new_tokens, int) or num_new_tokens < 1:
        raise ValueError(f"the number of new tokens must be a positive integer, got {num_new_tokens!r}")
    if hmm.config.homogeneous:
        return
    if num_new_tokens > hmm.seq_len:
        raise ValueError(f"cannot constrain {num_new_tokens} new tokens: the HMM window holds seq_len="
                         f"{hmm.seq_len} tokens; ask for at most {hmm.seq_len} new tokens")
    if prefix_length + num_new_tokens > hmm.seq_len:
        raise ValueError(
            f"a prefix of {prefix_length} tokens plus {num_new_tokens} new tokens exceeds the HMM window "
            f"(seq_len={hmm.seq_len}); the constrained text must lie inside one window, so shorten the "
            f"prefix to at most {hmm.seq_len - num_new_tokens} tokens or ask for fewer new tokens"
        )


def _long_tensor(values, device: torch.device) -> Tensor:
    return torch.tensor(list(values), dtype=torch.long, device=device)


class _EdgeTensors:
    """A DFA's edges as index tensors: explicit token sets, plus one default edge per state."""

    def __init__(self, dfa: DFA, device: torch.device):
        sources, targets, tokens, token_edges, token_states, default_edges = [], [], [], [], [], []
        for edge in dfa.edges():
            index = len(sources)
            sources.append(edge.source)
            targets.append(edge.target)
            if edge.tokens.complement:
                default_edges.append(index)
            else:
                members = sorted(edge.tokens.tokens)
                tokens += members
                token_edges += [index] * len(members)
                token_states += [edge.source] * len(members)
        as_long = partial(_long_tensor, device=device)
        self.num_states = dfa.num_states
        self.sources, self.targets = as_long(sources), as_long(targets)
        self.tokens, self.token_edges, self.token_states = as_long(tokens), as_long(token_edges), as_long(token_states)
        self.default_edges = as_long(default_edges)   # default_edges[q] is the default edge of state q

    def aggregate(self, emission_matrix: Tensor, column_sums: Tensor) -> Tensor:
        """``agg[e, i]``: the emission mass of edge e's token set, float64 [E, h]."""
        rows = emission_matrix.index_select(0, self.tokens).double()
        aggregated = torch.zeros(len(self.sources), emission_matrix.shape[1], dtype=torch.float64,
                                 device=emission_matrix.device)
        aggregated.index_add_(0, self.token_edges, rows)
        explicit_per_state = torch.zeros(self.num_states, emission_matrix.shape[1], dtype=torch.float64,
                                         device=emission_matrix.device).index_add_(0, self.token_states, rows)
        aggregated[self.default_edges] = (column_sums.double().unsqueeze(0) - explicit_per_state).clamp_min(0)
        return aggregated


class ConstraintTables:
    """The future tables of one HMM and DFA for the positions ``start .. end-1`` of a window."""

    def __init__(self, hmm, dfa: DFA, start: int, end: int):
        if not isinstance(dfa, DFA):
            raise ValueError(f"constraint must be a hmmlvd.constraints.DFA, got {type(dfa).__name__}")
        if dfa.vocab_size != hmm.vocab_size:
            raise ValueError(f"the DFA reads {dfa.vocab_size} token ids but the HMM has vocab_size="
                             f"{hmm.vocab_size}; build the constraint for the HMM's vocabulary")
        check_window(hmm, start, end - start)
        self.hmm, self.dfa, self.start, self.end = hmm, dfa, start, end
        self.edges = _EdgeTensors(dfa, hmm.device)
        accepting = torch.zeros(dfa.num_states, hmm.num_states, dtype=torch.float64, device=hmm.device)
        accepting[sorted(dfa.accepting)] = 1.0
        # future[t - start - 1] holds future[t] for t = start+1 .. end, scaled by exp(log_scales[...]).
        self._future = [accepting]
        self._log_scales = [0.0]
        with torch.no_grad():
            for t in range(end - 1, start, -1):
                backward = self._backward(t, self._future[0])
                future = backward @ hmm.transition_matrix(t - 1).double().T
                peak = float(future.max())
                peak = peak if peak > 0 else 1.0
                self._future.insert(0, future / peak)
                self._log_scales.insert(0, self._log_scales[0] + math.log(peak))

    def _backward(self, t: int, future_next: Tensor) -> Tensor:
        """``backward_t[a, i]`` from ``future[t+1]`` (in the scale of ``future[t+1]``)."""
        emission = self.hmm.emission_matrix(t)
        aggregated = self.edges.aggregate(emission, emission.sum(dim=0))
        contributions = aggregated * future_next[self.edges.targets]
        result = torch.zeros(self.dfa.num_states, self.hmm.num_states, dtype=torch.float64, device=self.hmm.device)
        return result.index_add_(0, self.edges.sources, contributions)

    def future(self, t: int) -> tuple[Tensor, float]:
        """``(scaled future[t] [Q, h] float64, its log scale)`` for ``start < t <= end``."""
        if not self.start < t <= self.end:
            raise ValueError(f"future tables exist for positions {self.start + 1}..{self.end}, not {t}")
        index = t - self.start - 1
        return self._future[index], self._log_scales[index]

    def next_token_log_joint(self, t: int, state_probs: Tensor, dfa_states: list[int],
                             with_next_token: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``log p(x_t = v, constraint | x_<t)`` as float64 [B, V].

        ``state_probs`` [B, h] is ``p(z_t | x_<t)`` per row and ``dfa_states`` the DFA state of
        each row after reading the constrained tokens before position ``t``. With ``with_next_token``
        it also returns ``log p(x_t = v | x_<t)`` [B, V], from the same pass over the emission table.
        """
        future, log_scale = self.future(t + 1)
        emission = self.hmm.emission_matrix(t)
        state_probs = state_probs.double()
        batch = state_probs.shape[0]
        as_long = partial(_long_tensor, device=self.hmm.device)
        # Every token first, as if it took its row's default edge: one [B, h] @ [h, V] product (stacked on
        # p(z_t | x_<t) itself when the next-token distribution is asked for too).
        weights = state_probs * future[as_long([self.dfa.default_target(q) for q in dfa_states])]
        if with_next_token:
            weights = torch.cat([weights, state_probs])
        peaks = weights.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        scaled = (weights / peaks).to(emission.dtype)
        log_products = (scaled @ emission.T).double().clamp_min(0).log() + peaks.log()   # [B or 2B, V]
        log_joint = log_products[:batch]
        # Then the few exception tokens of each row's DFA state, exactly in float64.
        exceptions = [(row, token, target) for row, q in enumerate(dfa_states)
                      for token, target in self.dfa.exceptions(q).items()]
        if exceptions:
            rows, tokens, targets = (as_long(column) for column in zip(*exceptions))
            exact = (state_probs[rows] * emission[tokens].double() * future[targets]).sum(dim=1)
            log_joint[rows, tokens] = exact.log()
        if with_next_token:
            return log_joint + log_scale, log_products[batch:]
        return log_joint + log_scale
