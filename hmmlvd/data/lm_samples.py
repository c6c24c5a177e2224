"""Samples from a causal language model, in a sharded, checksummed on-disk cache.

:func:`sample_lm` draws ``num_samples`` sequences of ``num_tokens`` tokens from any ``transformers`` causal LM,
unconditionally (after the model's BOS/EOS token) or after prompts, in batches. Samples live in shards of
``shard_size`` sequences inside a folder keyed by the model's content hash (:func:`model_fingerprint`) and the
sampling settings. Shard ``i`` is drawn from its own seed (``seed``, ``i``), so a run killed half-way and rerun
continues where it stopped and gives exactly the samples of an uninterrupted run, and asking for more samples
later only adds shards. Every shard records the SHA-256 of its tokens; a damaged shard is refused with a
ValueError naming it. Under ``torch.distributed`` the ranks draw interleaved shards, gather them, and rank 0
writes them.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..io import atomic_write_json, cache_folder, digest_tensors, load_tensors, save_tensors

FORMAT_VERSION = 1


def model_fingerprint(model, tokenizer) -> str:
    """SHA-256 of what a transformers model computes: its config (minus where it was loaded from), its tokenizer
    and every weight's name, dtype, shape and bytes in name order. Equal for copies of one model at two paths."""
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True))
                  .encode())
    digest_tensors(digest, model.state_dict())
    return digest.hexdigest()


@dataclass(frozen=True)
class SampleSettings:
    """How samples are drawn: ``num_tokens`` per sequence at ``temperature`` (1 = the model's distribution), in
    shards of ``shard_size`` sequences, ``batch_size`` per forward pass; shard ``i`` is seeded by (``seed``, i)."""

    num_tokens: int = 32
    temperature: float = 1.0
    seed: int = 0
    shard_size: int = 1024
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("num_tokens", "shard_size", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'seed' else 'positive'} integer, "
                                 f"got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (1 samples the model's own distribution), got "
                             f"{self.temperature!r}")


def default_cache_dir() -> Path:
    return cache_folder("lm_samples")


class SampleCache:
    """Shards ``shard-000000.safetensors``, ... of ``tokens`` [shard_size, T] and ``log_probs`` [shard_size]
    (the model's own log-likelihood of each sequence given its prompt) in one folder per key."""

    def __init__(self, root: str | os.PathLike, key: dict):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        self.folder, self.key = Path(root) / digest, key

    def path(self, index: int) -> Path:
        return self.folder / f"shard-{index:06d}.safetensors"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def read(self, index: int) -> tuple[Tensor, Tensor]:
        """``(tokens [m, T], log_probs [m])`` of shard ``index``, after checking its SHA-256."""
        path = self.path(index)
        try:
            tensors, metadata = load_tensors(path)
            tokens, log_probs = tensors["tokens"], tensors["log_probs"]
        except (ValueError, KeyError) as error:
            raise ValueError(f"LM sample shard {path} is damaged ({error}); delete it and rerun to draw it again") \
                from None
        if metadata.get("sha256") != _checksum(tokens, log_probs):
            raise ValueError(f"LM sample shard {path} fails its SHA-256 check (corrupted on disk); delete it and "
                             "rerun to draw it again")
        return tokens, log_probs

    def write(self, index: int, tokens: Tensor, log_probs: Tensor) -> None:
        if not (self.folder / "key.json").is_file():
            atomic_write_json(self.folder / "key.json", self.key)
        save_tensors(self.path(index), {"tokens": tokens, "log_probs": log_probs},
                     {"sha256": _checksum(tokens, log_probs), "format": FORMAT_VERSION})


def _checksum(tokens: Tensor, log_probs: Tensor) -> str:
    digest = hashlib.sha256()
    digest_tensors(digest, {"tokens": tokens, "log_probs": log_probs})
    return digest.hexdigest()


def start_token(tokenizer) -> int:
    """The id an unconditional sample starts from: the tokenizer's BOS token, else its EOS token."""
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start unconditional samples from; "
                     "give prompts (--prompts FILE)")


def prompt_ids(tokenizer, prompts: Sequence[str] | None) -> list[list[int]]:
    """Token ids of each prompt (the start token alone when ``prompts`` is None)."""
    if prompts is None:
        return [[start_token(tokenizer)]]
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("the prompts file holds no non-empty line; give one prompt per line")
    return [list(tokenizer(p, add_special_tokens=True)["input_ids"]) or [start_token(tokenizer)] for p in prompts]


@torch.no_grad()
def draw(model, prompts: list[list[int]], num_tokens: int, vocab_size: int, temperature: float = 1.0,
         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample ``num_tokens`` tokens after each prompt (lists of ids, left-padded here), with the KV cache.

    Only ids below ``vocab_size`` (the tokenizer's) are drawn. Returns ``(tokens [B, num_tokens] LongTensor,
    log_probs [B] float64)``: each continuation's log-likelihood under the model at temperature 1.
    """
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = torch.tensor(prompt), 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    tokens = torch.empty(len(prompts), num_tokens, dtype=torch.long, device=device)
    log_probs = torch.zeros(len(prompts), dtype=torch.float64, device=device)
    # transformers 5.x calls the KV cache ``cache``; earlier versions ``past_key_values``
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past, step_ids = None, ids
    for t in range(num_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    **{cache_name: past})
        past = getattr(out, cache_name)
        logits = out.logits[:, -1, :vocab_size].double()
        choice = torch.multinomial(torch.softmax(logits / temperature, dim=1), 1, generator=generator)
        tokens[:, t] = choice.squeeze(1)
        log_probs += torch.log_softmax(logits, dim=1).gather(1, choice).squeeze(1)
        step_ids, mask = choice, torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return tokens.cpu(), log_probs.cpu()


def sample_key(model, tokenizer, settings: SampleSettings, prompts: list[list[int]], split: str) -> dict:
    """The cache key of a set of samples: the model's content hash, the settings (but the batch size), the
    prompts and the split name (each split draws from its own seeds, so held-out samples never overlap)."""
    fields = {k: v for k, v in asdict(settings).items() if k != "batch_size"}
    prompt_hash = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    return {"model": model_fingerprint(model, tokenizer), **fields, "prompts": prompt_hash, "split": split,
            "format": FORMAT_VERSION}


def draw_shard(model, prompts: list[list[int]], settings: SampleSettings, index: int, vocab_size: int,
               split: str = "train", bar: tqdm | None = None) -> tuple[Tensor, Tensor]:
    """Shard ``index``: ``(tokens [shard_size, T], log_probs [shard_size])``, seeded by (seed, split, index).

    Sample ``j`` of the whole set (``index * shard_size + row``) continues prompt ``j mod len(prompts)``.
    """
    device = next(model.parameters()).device
    seed = int(hashlib.sha256(f"{settings.seed}:{split}:{index}".encode()).hexdigest()[:15], 16)
    generator = torch.Generator(device=device).manual_seed(seed)
    first = index * settings.shard_size
    tokens, log_probs = [], []
    for start in range(0, settings.shard_size, settings.batch_size):
        rows = range(first + start, first + min(start + settings.batch_size, settings.shard_size))
        batch = [prompts[j % len(prompts)] for j in rows]
        drawn, scores = draw(model, batch, settings.num_tokens, vocab_size, settings.temperature, generator)
        tokens.append(drawn)
        log_probs.append(scores)
        if bar is not None:
            bar.update(len(batch))
    return torch.cat(tokens), torch.cat(log_probs)
