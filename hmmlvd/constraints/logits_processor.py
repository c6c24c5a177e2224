"""Guide a transformers causal LM with an HMM: a ``LogitsProcessor`` for ``model.generate``."""
from __future__ import annotations

import torch
from torch import Tensor
from transformers import LogitsProcessor

from .dfa import DFA
from .generation import unsatisfiable_reason
from .inference import ConstraintTables, filter_step


class HMMConstraintLogitsProcessor(LogitsProcessor):
    """Adds ``log p_HMM(constraint | x_<t, x_t = v) - log p_HMM(constraint | x_<t)`` to the base model's
    next-token log-probabilities.

    The HMM reads only the generated tokens (those after the first ``prompt_length`` columns of
    ``input_ids``) at window positions ``0 .. max_new_tokens-1``, and the DFA must accept exactly
    those ``max_new_tokens`` tokens; so generate exactly that many (e.g. ``min_new_tokens`` equal
    to ``max_new_tokens``, or no EOS token). Tokens that make the constraint unsatisfiable get
    ``-inf``, so greedy search, sampling and beam search all return satisfying continuations. With
    beam search the beam score telescopes to ``log p_LM(x) + log p_HMM(constraint | x) - const``.

    The HMM must have been trained on the base model's tokenizer; when the model's vocabulary is
    padded past the HMM's, the extra ids are never chosen.
    """

    def __init__(self, hmm, constraint: DFA, prompt_length: int, max_new_tokens: int):
        if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 0:
            raise ValueError(f"prompt_length must be a non-negative integer (input_ids.shape[1]), "
                             f"got {prompt_length!r}")
        self.tables = ConstraintTables(hmm, constraint, 0, max_new_tokens)
        self.hmm, self.constraint = hmm, constraint
        self.prompt_length, self.max_new_tokens = prompt_length, max_new_tokens

    def _state(self, generated: Tensor) -> tuple[Tensor, list[int], Tensor]:
        """Per row: p(z_j | x_<j), the DFA state, and whether the row holds only HMM tokens."""
        valid = ((generated >= 0) & (generated < self.hmm.vocab_size)).all(dim=1)
        tokens = generated.clamp(0, self.hmm.vocab_size - 1).to(self.hmm.device)
        state_probs = self.hmm.initial.double().expand(generated.shape[0], -1)
        for t in range(generated.shape[1]):
            state_probs = filter_step(self.hmm, state_probs, tokens[:, t], t)
        dfa_states = [self.constraint.run(row) for row in tokens.tolist()]
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
        state_probs, dfa_states, valid = self._state(generated)
        with torch.no_grad():
            log_joint = self.tables.next_token_log_joint(step, state_probs, dfa_states)          # log p(v, c | x_<j)
            next_probs = state_probs.to(self.hmm.dtype) @ self.hmm.emission_matrix(step).T
            log_next = next_probs.double().clamp_min(0).log()                                     # log p(v | x_<j)
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
