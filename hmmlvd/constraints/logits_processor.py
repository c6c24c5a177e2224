"""Guide a transformers causal LM with an HMM: a ``LogitsProcessor`` for ``model.generate``."""
from __future__ import annotations

import torch
from torch import Tensor
from transformers import LogitsProcessor

from ..hmm import filter_step
from .dfa import DFA
from .generation import unsatisfiable_reason
from .inference import ConstraintTables


class HMMConstraintLogitsProcessor(LogitsProcessor):
    """Adds ``log p_HMM(constraint | x_<t, x_t = v) - log p_HMM(constraint | x_<t)`` to the base model's
    next-token log-probabilities.

    The HMM reads the last ``context_tokens`` prompt tokens (default none) and then the generated
    tokens (those after the first ``prompt_length`` columns of ``input_ids``), all inside one window:
    ``context_tokens + max_new_tokens <= seq_len``. The DFA must accept exactly the
    ``max_new_tokens`` generated tokens, so generate exactly that many (``min_new_tokens`` equal to
    ``max_new_tokens``, or no EOS token). Tokens that make the constraint unsatisfiable get ``-inf``,
    so greedy search, sampling and beam search all return satisfying continuations; with beam search
    the beam score telescopes to ``log p_LM(x) + log p_HMM(constraint | x) - const``.

    The HMM must have been trained on the base model's tokenizer; when the model's vocabulary is
    padded past the HMM's, the extra ids are never chosen. Example::

        processor = HMMConstraintLogitsProcessor(hmm, all_of([[tokenizer.encode(" river")[0]]], hmm.vocab_size),
                                                 prompt_length=inputs.shape[1], max_new_tokens=20)
        model.generate(inputs, max_new_tokens=20, min_new_tokens=20,
                       logits_processor=LogitsProcessorList([processor]))
    """

    def __init__(self, hmm, constraint: DFA, prompt_length: int, max_new_tokens: int, context_tokens: int = 0):
        for name, value in (("prompt_length", prompt_length), ("context_tokens", context_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if context_tokens > prompt_length:
            raise ValueError(f"context_tokens ({context_tokens}) cannot exceed prompt_length ({prompt_length})")
        self.tables = ConstraintTables(hmm, constraint, context_tokens, context_tokens + max_new_tokens)
        self.hmm, self.constraint = hmm, constraint
        self.prompt_length, self.max_new_tokens, self.context_tokens = prompt_length, max_new_tokens, context_tokens
        self._known: dict[tuple[int, ...], tuple[Tensor, int]] = {}     # tokens read -> (p(z | them) [h], DFA state)

    def _state(self, input_ids: Tensor) -> tuple[Tensor, list[int], Tensor]:
        """Per row: p(z_t | what the HMM has read), the DFA state, and whether the row holds only HMM tokens.

        Each call keeps the rows' states keyed by the tokens read, so the next call (one token longer, rows in
        any order, as beam search reorders them) moves each row by one filter step; rows it cannot match are
        filtered from the start of the window.
        """
        read = input_ids[:, self.prompt_length - self.context_tokens:]
        valid = ((read >= 0) & (read < self.hmm.vocab_size)).all(dim=1)
        tokens = read.clamp(0, self.hmm.vocab_size - 1).to(self.hmm.device)
        rows = [tuple(row) for row in tokens.tolist()]
        previous = [self._known.get(row[:-1]) for row in rows] if read.shape[1] > 0 else [None]
        if all(entry is not None for entry in previous):
            state_probs = filter_step(self.hmm, torch.stack([entry[0] for entry in previous]), tokens[:, -1],
                                      read.shape[1] - 1)
            dfa_states = [self.constraint.step(entry[1], row[-1]) if len(row) > self.context_tokens else entry[1]
                          for entry, row in zip(previous, rows)]
        else:
            state_probs = self.hmm.initial.double().expand(read.shape[0], -1)
            for t in range(read.shape[1]):
                state_probs = filter_step(self.hmm, state_probs, tokens[:, t], t)
            dfa_states = [self.constraint.run(row[self.context_tokens:]) for row in rows]
        self._known = {row: (probs, dfa) for row, probs, dfa in zip(rows, state_probs, dfa_states)}
        return state_probs, dfa_states, valid

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        generated = input_ids[:, self.prompt_length:]
        step = generated.shape[1]
        if step >= self.max_new_tokens:
            return scores
        vocab = self.hmm.vocab_size
        if scores.shape[1] < vocab:
            raise ValueError(f"the base model scores {scores.shape[1]} tokens but the HMM has vocab_size={vocab}; "
                             "the HMM must be trained on the base model's tokenizer")
        state_probs, dfa_states, valid = self._state(input_ids)
        position = self.context_tokens + step
        with torch.no_grad():
            # log p(v, c | x_<j) and log p(v | x_<j), from one pass over the emission table
            log_joint, log_next = self.tables.next_token_log_joint(position, state_probs, dfa_states,
                                                                   with_next_token=True)
            log_constraint = torch.logsumexp(log_joint, dim=1, keepdim=True)                     # log p(c | x_<j)
        if step == 0 and bool(torch.isneginf(log_constraint).any()):
            reason = unsatisfiable_reason(self.constraint, self.max_new_tokens)
            raise ValueError(f"the constraint cannot be satisfied in max_new_tokens={self.max_new_tokens} "
                             f"tokens: {reason}")
        guide = torch.where(torch.isneginf(log_joint), torch.full_like(log_joint, float("-inf")),
                            log_joint - log_next - log_constraint)
        # Rows already off the constraint (dead beams, padded finished rows) are left as they are.
        live = (valid.to(guide.device) & torch.isfinite(log_constraint.squeeze(1))).unsqueeze(1)
        guide = torch.where(live, guide, torch.zeros_like(guide)).to(device=scores.device, dtype=scores.dtype)
        log_probs = torch.log_softmax(scores, dim=1)
        out = torch.full_like(log_probs, float("-inf"))
        out[:, :vocab] = log_probs[:, :vocab] + guide
        return torch.where(live.to(scores.device), out, log_probs)
