"""The sliding protocol: every token of a stream predicted from the previous <= seq_len - 1 tokens."""
from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm


def sliding_log_probs(hmm, stream: Tensor, batch_size: int = 1024, progress: bool = False,
                      desc: str = "sliding windows") -> Tensor:
    """``log p(x_t | x_{t-seq_len+1..t-1})`` for every token of a 1-D ``stream`` (float64 [N]).

    The first window contributes all its positions; every later stride-1 window its last one.
    """
    length = hmm.seq_len
    head = hmm.conditional_log_probs(stream[:length].unsqueeze(0))[0]
    if len(stream) <= length:
        return head
    later = stream.unfold(0, length, 1)[1:]
    tail = [hmm.conditional_log_probs(later[start:start + batch_size])[:, -1]
            for start in tqdm(range(0, len(later), batch_size), desc=desc, unit="batch", disable=not progress)]
    return torch.cat([head, *tail])
