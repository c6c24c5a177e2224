"""A causal LM as the source of LVD: its samples (sharded across ranks, cached) and its hidden states as teacher.

:func:`lm_samples` draws (or reads back) a split of samples with the primitives of
:mod:`hmmlvd.data.lm_samples`; under ``torch.distributed`` each rank draws every ``world_size``-th missing
shard, the shards are gathered, and rank 0 writes them. :class:`HiddenStateTeacher` is the second LVD teacher
beside :class:`~hmmlvd.lvd.encoder.SuffixEncoder`: the LM's own hidden state after reading ``x_<=t`` is the
feature clustered at position ``t``.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.lm_samples import (SampleCache, SampleSettings, default_cache_dir, draw_shard, model_fingerprint,
                               prompt_ids, sample_key)
from ..distributed import default_device, is_main_process, rank_and_world_size, sum_across_ranks


def load_causal_lm(name_or_path: str | os.PathLike, device: str | torch.device | None = None):
    """``(model, tokenizer)`` of a transformers causal LM (a local folder or a name in the HF cache), in eval
    mode on ``device`` (default: CUDA when available)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load the causal LM {str(name_or_path)!r} (a local folder, or a name already in "
                         f"the Hugging Face cache): {error}") from None
    return model.to(default_device(device)).eval(), tokenizer


def lm_samples(model, tokenizer, num_samples: int, settings: SampleSettings = SampleSettings(),
               prompts: Sequence[str] | None = None, split: str = "train", cache_dir: str | os.PathLike | None = None,
               progress: bool = True) -> tuple[Tensor, Tensor]:
    """The first ``num_samples`` samples of ``split``: ``(tokens [num_samples, T], log_probs [num_samples])``,
    ``log_probs`` being the LM's log-likelihood of each continuation.

    Shards already in the cache (``cache_dir``, default ``$HMMLVD_CACHE/lm_samples``) are read and checked;
    the missing ones are drawn and written as they complete, so a killed run continues when rerun.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    prompts_ids = prompt_ids(tokenizer, prompts)
    cache = SampleCache(cache_dir or default_cache_dir(), sample_key(model, tokenizer, settings, prompts_ids, split))
    num_shards = -(-num_samples // settings.shard_size)
    rank, world_size = rank_and_world_size()
    missing = [index for index in range(num_shards) if not cache.has(index)]
    groups = [missing[begin:begin + world_size] for begin in range(0, len(missing), world_size)]
    mine = sum(rank < len(group) for group in groups) * settings.shard_size
    drawn: dict[int, tuple[Tensor, Tensor]] = {}
    with tqdm(total=mine, desc=f"sampling {split} ({num_shards - len(missing)} shards cached)", unit="seq",
              disable=not progress or rank != 0 or mine == 0) as bar:
        for group in groups:
            tokens = torch.zeros(world_size, settings.shard_size, settings.num_tokens, dtype=torch.long)
            log_probs = torch.zeros(world_size, settings.shard_size, dtype=torch.float64)
            if rank < len(group):
                tokens[rank], log_probs[rank] = draw_shard(model, prompts_ids, settings, group[rank], len(tokenizer),
                                                           split, bar)
            sum_across_ranks([tokens, log_probs])
            for slot, index in enumerate(group):
                drawn[index] = tokens[slot], log_probs[slot]
                if is_main_process():
                    cache.write(index, tokens[slot], log_probs[slot])
    parts = [drawn[index] if index in drawn else cache.read(index) for index in range(num_shards)]
    return torch.cat([p[0] for p in parts])[:num_samples], torch.cat([p[1] for p in parts])[:num_samples]


class HiddenStateTeacher:
    """LVD features from a causal LM: its hidden state (layer ``layer``, default the last) at every position of
    each window, read after ``start_token`` (the token the samples were drawn after; None: no start token).

    It implements the teacher interface of :func:`~hmmlvd.lvd.embeddings.embed_windows`: ``cache_key()`` and
    ``embed_block(windows [m, T], tokenizer, progress) -> [m, T, d]`` (float32, on CPU).
    """

    def __init__(self, model, tokenizer, layer: int = -1, start_token: int | None = None, batch_size: int = 64):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        num_layers = int(model.config.num_hidden_layers) + 1          # the embeddings, then every block
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer must be in [{-num_layers}, {num_layers}) for this model, got {layer}")
        self.model, self.layer, self.start_token, self.batch_size = model.eval(), layer, start_token, batch_size
        self.fingerprint = model_fingerprint(model, tokenizer)

    def cache_key(self) -> dict:
        return {"teacher": "causal_lm_hidden_states", "model": self.fingerprint, "layer": self.layer,
                "start_token": self.start_token}

    @torch.no_grad()
    def embed_block(self, windows: Tensor, tokenizer=None, progress: tqdm | None = None) -> Tensor:
        device = next(self.model.parameters()).device
        out = []
        for batch in windows.split(self.batch_size):
            batch = batch.to(device)
            if self.start_token is not None:
                batch = torch.cat([batch.new_full((len(batch), 1), self.start_token), batch], dim=1)
            hidden = self.model(input_ids=batch, output_hidden_states=True).hidden_states[self.layer]
            out.append(hidden[:, 1:] if self.start_token is not None else hidden)
            if progress is not None:
                progress.update(windows.shape[1] * len(batch))
        return torch.cat(out).float().cpu()
