"""LVD's closed-form HMM fit with the complete-data counts summed across ranks (torch.distributed)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..distributed import sum_across_ranks
from ..em.mstep import apply_m_step
from ..hmm import HMM, HMMConfig
from ..hmm.complete_data import complete_data_counts


def closed_form_hmm(tokens: Tensor, states: Tensor, num_states: int, vocab_size: int, *, pseudocount: float = 0.1,
                    seq_len: int | None = None, dtype: torch.dtype = torch.float32) -> HMM:
    """The maximum-likelihood HMM of observed ``(tokens, states)`` [n, L] (LVD's Eq. 1 bound), like
    :meth:`HMM.from_complete_data`; under ``torch.distributed`` each rank passes its own windows and
    assignments, the counts are summed across ranks and every rank returns the same HMM."""
    model = HMM.uniform(HMMConfig(num_states, vocab_size, seq_len or tokens.shape[1]), device=tokens.device,
                        dtype=dtype)
    counts = complete_data_counts(model, tokens, states)
    sum_across_ranks(list(counts.values()))
    model.set_parameters(apply_m_step(model.parameter_groups(), counts, pseudocount=pseudocount, step_size=1.0,
                                      overwrite_counts=True))
    return model
