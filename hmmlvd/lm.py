"""An HMM with its tokenizer used as a language model: scoring, next-token distributions and
(optionally constrained) generation, batched, on CPU or CUDA.

**The window.** A non-homogeneous HMM models ``seq_len`` positions. Texts longer than that are
scored with the *sliding* protocol: token ``x_t`` with ``t >= seq_len`` is predicted from the
previous ``seq_len - 1`` tokens at the last window position. Unconstrained generation and
:meth:`LanguageModel.next_token_logprobs` follow the same rule once the context fills the window.
Constrained generation is exact only inside one window, so the prefix plus ``max_new_tokens``
must fit in ``seq_len`` (a ValueError says so otherwise); the constraint's DFA reads only the
``max_new_tokens`` generated tokens, all of which are generated (the HMM has no end-of-text event).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .constraints import (DFA, all_of, any_of, constraint_log_prob, intersect, length_between, none_of,
                          sample_constrained)
from .hmm import HMM, check_sampling_options, sample_continuations, sliding_log_probs

MODEL_TYPE = "language_model"


@dataclass(frozen=True)
class TextScore:
    """The score of one text: its token ids and ``log p(x_t | context)`` of each (natural log)."""

    text: str
    token_ids: list[int]
    token_log_probs: list[float]

    @property
    def total_log_prob(self) -> float:
        return math.fsum(self.token_log_probs)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def _as_list(texts: str | Sequence[str], what: str) -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"{what} must be a string or a list of strings, got an item of type {type(text).__name__}")
    return texts


class LanguageModel:
    """An :class:`~hmmlvd.HMM` plus a tokenizer (word ``Vocab``, HF or sentencepiece)."""

    def __init__(self, hmm: HMM, tokenizer):
        if tokenizer.vocab_size != hmm.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the HMM has vocab_size="
                             f"{hmm.vocab_size}; use the tokenizer the HMM was trained with")
        self.hmm, self.tokenizer = hmm, tokenizer

    # ----------------------------------------------------------------- basics
    @property
    def device(self) -> torch.device:
        return self.hmm.device

    @property
    def window(self) -> int | None:
        """The longest context the HMM models (None for a homogeneous HMM: unbounded)."""
        return None if self.hmm.config.homogeneous else self.hmm.seq_len

    def to(self, device: str | torch.device) -> "LanguageModel":
        return LanguageModel(self.hmm.to(device=device), self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in token_ids])

    def _tensor(self, rows: list[list[int]]) -> Tensor:
        """Rows of token ids as a LongTensor on the model's device, padded with -1 (missing)."""
        out = torch.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=torch.long)
        for index, row in enumerate(rows):
            out[index, :len(row)] = torch.tensor(row, dtype=torch.long)
        return out.to(self.device)

    def _by_length(self, sequences: list[list[int]]) -> Iterator[tuple[list[int], Tensor]]:
        """``(row indices, LongTensor [rows, length])`` per group of equally long sequences
        (positions matter in a non-homogeneous HMM, so rows are never padded at the front)."""
        groups: dict[int, list[int]] = {}
        for index, sequence in enumerate(sequences):
            groups.setdefault(len(sequence), []).append(index)
        for rows in groups.values():
            yield rows, self._tensor([sequences[r] for r in rows])

    # ----------------------------------------------------------------- scoring
    def score(self, texts: str | Sequence[str], batch_size: int = 256, progress: bool = False) -> list[TextScore]:
        """Per-token log-probabilities of each text (texts longer than the window: sliding protocol).

        ``batch_size`` sequences go through each forward pass; ``progress`` shows a bar over the
        sliding windows.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        texts = _as_list(texts, "texts")
        encoded = [self.encode(text) for text in texts]
        log_probs = [torch.zeros(len(ids), dtype=torch.float64) for ids in encoded]
        window = self.window
        long_rows = [row for row, ids in enumerate(encoded) if window is not None and len(ids) > window]
        short = [row for row, ids in enumerate(encoded) if ids and (window is None or len(ids) <= window)]
        for begin in range(0, len(short), batch_size):
            rows = short[begin:begin + batch_size]
            values = self.hmm.conditional_log_probs(self._tensor([encoded[r] for r in rows])).cpu()
            for offset, row in enumerate(rows):
                log_probs[row] = values[offset, :len(encoded[row])]
        for row in long_rows:
            stream = torch.tensor(encoded[row], dtype=torch.long, device=self.device)
            log_probs[row] = sliding_log_probs(self.hmm, stream, batch_size, progress).cpu()
        return [TextScore(text, ids, values.tolist()) for text, ids, values in zip(texts, encoded, log_probs)]

    def perplexity(self, texts: str | Sequence[str], batch_size: int = 256, progress: bool = False) -> float:
        """``exp(-sum log p / number of tokens)`` over all texts (sliding protocol past the window)."""
        scores = self.score(texts, batch_size, progress)
        num_tokens = sum(s.num_tokens for s in scores)
        if num_tokens == 0:
            raise ValueError("perplexity needs at least one token; the texts are empty")
        return math.exp(-math.fsum(s.total_log_prob for s in scores) / num_tokens)

    # ----------------------------------------------------------------- next token
    def _context(self, ids: list[int]) -> list[int]:
        """The part of a context the HMM conditions on: the last seq_len - 1 tokens at most."""
        window = self.window
        return ids if window is None or len(ids) < window else ids[len(ids) - window + 1:]

    def _next_token_log_probs(self, contexts: list[list[int]]) -> Tensor:
        out = torch.empty(len(contexts), self.hmm.vocab_size, dtype=torch.float64, device=self.device)
        trimmed = [self._context(ids) for ids in contexts]
        for rows, batch in self._by_length(trimmed):
            out[torch.tensor(rows, device=self.device)] = self.hmm.next_token_log_probs(batch)
        return out

    def next_token_logprobs(self, prefix: str | Sequence[str]) -> Tensor:
        """``log p(next token | prefix)``: [V] for one prefix, [B, V] for a list (float64)."""
        prefixes = _as_list(prefix, "prefix")
        result = self._next_token_log_probs([self.encode(p) for p in prefixes])
        return result[0] if isinstance(prefix, str) else result

    # ----------------------------------------------------------------- generation
    def generate_ids(self, prefix: str | Sequence[str] = "", max_new_tokens: int = 20, temperature: float = 1.0,
                     top_k: int | None = None, seed: int | None = None, constraint: DFA | None = None,
                     num_samples: int = 1) -> list[list[int]]:
        """Token ids of ``num_samples`` continuations per prefix (prefix-major order); see :meth:`generate`."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        check_sampling_options(temperature, top_k)
        prefixes = [self.encode(p) for p in _as_list(prefix, "prefix") for _ in range(num_samples)]
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        out: list[list[int]] = [[] for _ in prefixes]
        for rows, batch in self._by_length(prefixes):
            if constraint is None:     # filtered inside the window, sliding past it
                tokens = sample_continuations(self.hmm, batch, max_new_tokens, temperature, top_k, generator)
            else:
                tokens = sample_constrained(self.hmm, constraint, batch, max_new_tokens, temperature=temperature,
                                            top_k=top_k, generator=generator)
            for row, sampled in zip(rows, tokens.tolist()):
                out[row] = sampled
        return out

    def generate(self, prefix: str | Sequence[str] = "", max_new_tokens: int = 20, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, constraint: DFA | None = None,
                 num_samples: int = 1) -> list[str]:
        """Decoded continuations, ``num_samples`` per prefix (prefix-major order).

        ``temperature=0`` is greedy; ``top_k`` keeps the k likeliest tokens; ``seed`` makes it
        reproducible. With ``constraint`` (a DFA over token ids, e.g. from :meth:`keywords`) every
        continuation satisfies it; at temperature 1 without top_k they are exact samples of
        ``p(continuation | prefix, constraint)``. See the module docstring for the window rules.
        """
        ids = self.generate_ids(prefix, max_new_tokens, temperature, top_k, seed, constraint, num_samples)
        return [self.decode(row) for row in ids]

    # ----------------------------------------------------------------- constraints from text
    def _phrases(self, words: Sequence[str], what: str) -> list[list[int]]:
        words = _as_list(words, what)
        if not words:
            raise ValueError(f"{what} needs at least one word or phrase")
        phrases = []
        for word in words:
            ids = self.encode(word)
            if not ids:
                raise ValueError(f"{what}: {word!r} encodes to no tokens")
            if self.tokenizer.unk_id is not None and self.tokenizer.unk_id in ids:
                raise ValueError(f"{what}: {word!r} is not in the vocabulary (it encodes to the unknown token); "
                                 "choose words the model knows")
            phrases.append(ids)
        return phrases

    def surface_forms(self, words: str | Sequence[str], what: str = "keywords") -> list[list[int]]:
        """The token sequences of a concept: every word or phrase of ``words`` (its inflections, synonyms, ...)
        as it reads inside a text. Where the tokenizer marks a preceding space (byte-level BPE: ``" river"``
        is not ``"river"``) that is the spaced form; words it cannot encode (the unknown token) are left out,
        and a ValueError says so when none is left."""
        words = _as_list(words, what)
        forms: list[list[int]] = []
        for word in words:
            spaced = self.encode(" " + word.strip())
            if not spaced or (self.tokenizer.unk_id is not None and self.tokenizer.unk_id in spaced):
                continue
            if spaced not in forms:
                forms.append(spaced)
        if not forms:
            raise ValueError(f"{what}: {words} are not in the vocabulary (they encode to the unknown token); "
                             "choose words the model knows")
        return forms

    def concepts(self, concepts: Sequence[str | Sequence[str]], mode: str = "all") -> DFA:
        """``mode="all"``: every concept appears; ``"any"``: at least one does. A concept is a word or phrase, or
        a list of them any one of which counts (``["run", "runs", "ran"]``); see :meth:`surface_forms`."""
        if mode not in ("all", "any"):
            raise ValueError(f"mode must be 'all' or 'any', got {mode!r}")
        if isinstance(concepts, str) or len(concepts) == 0:
            raise ValueError(f"concepts must be a non-empty list of words or word lists, got {concepts!r}")
        groups = [self.surface_forms(concept) for concept in concepts]
        vocab = self.hmm.vocab_size
        if mode == "any":
            return any_of([form for group in groups for form in group], vocab)
        return intersect(*(any_of(group, vocab) for group in groups))

    def keywords(self, words: Sequence[str]) -> DFA:
        """All of these words or phrases must appear in the continuation, in any order."""
        return all_of(self._phrases(words, "keywords"), self.hmm.vocab_size)

    def banned(self, words: Sequence[str]) -> DFA:
        """None of these words or phrases may appear in the continuation."""
        return none_of(self._phrases(words, "banned words"), self.hmm.vocab_size)

    def length(self, min_tokens: int, max_tokens: int, end_word: str | None = None) -> DFA:
        """The continuation, up to the first ``end_word`` if given, has ``min..max`` tokens."""
        end_token = None
        if end_word is not None:
            (ids,) = self._phrases([end_word], "end_word")
            if len(ids) != 1:
                raise ValueError(f"end_word must encode to a single token, got {end_word!r} -> {ids}")
            end_token = ids[0]
        return length_between(min_tokens, max_tokens, self.hmm.vocab_size, end_token)

    def constraint_log_prob(self, prefix: str | Sequence[str], constraint: DFA, max_new_tokens: int) -> Tensor:
        """``log p(constraint | prefix)`` over the next ``max_new_tokens`` tokens, per prefix (float64 [B])."""
        prefixes = [self.encode(p) for p in _as_list(prefix, "prefix")]
        out = torch.empty(len(prefixes), dtype=torch.float64)
        for rows, batch in self._by_length(prefixes):
            out[rows] = constraint_log_prob(self.hmm, constraint, batch, max_new_tokens).cpu()
        return out

    # ----------------------------------------------------------------- storage
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the HMM (config.json with model_type ``"language_model"``, model.safetensors) and the
        tokenizer (tokenizer.json, ...)."""
        self.hmm.save_pretrained(directory, model_type=MODEL_TYPE)
        self.tokenizer.save(Path(directory))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> "LanguageModel":
        """Load a folder written by :meth:`save_pretrained`, or an HMM's folder with a tokenizer saved beside it;
        ``dtype`` (e.g. ``torch.bfloat16``, half the memory and faster guidance) converts the HMM's tables."""
        from .data.tokenizers import load_tokenizer

        return cls(HMM.from_pretrained(directory, device=device, dtype=dtype), load_tokenizer(directory))

    def __repr__(self) -> str:
        return f"LanguageModel({self.hmm!r}, {self.tokenizer!r})"
