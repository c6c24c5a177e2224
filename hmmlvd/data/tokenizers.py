"""Sub-word tokenizers (any Hugging Face tokenizer, or a sentencepiece model trained on the corpus)
behind the common ``Tokenizer`` protocol, and :func:`load_tokenizer` for saved model folders.

Every tokenizer has ``vocab_size``, ``unk_id``, ``encode(text) -> list[int]``, ``decode(ids) -> str``
and ``save(directory)``, which writes ``directory/tokenizer.json`` with a ``"type"`` field
(``"word"``, ``"hf"`` or ``"sentencepiece"``) plus any files the tokenizer needs beside it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..io import TOKENIZER_FILE, atomic_write_bytes, atomic_write_json, read_json

HF_FOLDER = "hf_tokenizer"
SENTENCEPIECE_FILE = "sentencepiece.model"


class HFTokenizer:
    """A Hugging Face tokenizer (``AutoTokenizer``) from a local folder or a cached hub name.

    Texts are encoded without special tokens, so token ids are exactly the model's text tokens.
    ``save`` copies the tokenizer files into ``directory/hf_tokenizer`` so a saved model is self-contained.
    """

    def __init__(self, name_or_path: str | os.PathLike):
        from transformers import AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load a Hugging Face tokenizer from {str(name_or_path)!r} (a local folder "
                             f"or a name already in the HF cache; there is no download here): {error}") from None
        self.name_or_path = str(name_or_path)
        self.vocab_size = len(self._tokenizer)
        self.unk_id = self._tokenizer.unk_token_id

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids])

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self._tokenizer.save_pretrained(str(directory / HF_FOLDER))
        atomic_write_json(directory / TOKENIZER_FILE, {"type": "hf", "files": HF_FOLDER,
                                                       "source": self.name_or_path, "vocab_size": self.vocab_size})

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name_or_path!r}, vocab_size={self.vocab_size})"


class SentencePieceTokenizer:
    """A sentencepiece model (BPE or unigram), usually trained on the corpus with :meth:`train`."""

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(model_proto)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"not a valid sentencepiece model: {error}") from None
        self.model_proto = bytes(model_proto)
        self.vocab_size = self._processor.get_piece_size()
        unk = self._processor.unk_id()
        self.unk_id = unk if unk >= 0 else None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram",
              character_coverage: float = 1.0) -> "SentencePieceTokenizer":
        """Train on an iterable of lines of text; ``model_type`` is ``"bpe"`` or ``"unigram"``."""
        import sentencepiece

        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 4:
            raise ValueError(f"vocab_size must be an integer >= 4, got {vocab_size!r}")
        lines = [line for line in texts if line.strip()]
        if not lines:
            raise ValueError("cannot train a sentencepiece model on an empty corpus")
        model = io.BytesIO()
        try:
            with open(os.devnull, "w") as quiet:
                sentencepiece.SentencePieceTrainer.train(
                    sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type=model_type,
                    character_coverage=character_coverage, bos_id=-1, eos_id=-1, unk_id=0,
                    minloglevel=2, logstream=quiet,
                )
        except RuntimeError as error:
            raise ValueError(f"sentencepiece training failed (is vocab_size={vocab_size} too large for "
                             f"this corpus?): {error}") from None
        return cls(model.getvalue())

    def encode(self, text: str) -> list[int]:
        return list(self._processor.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode([int(i) for i in ids])

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        atomic_write_bytes(directory / SENTENCEPIECE_FILE, self.model_proto)
        atomic_write_json(directory / TOKENIZER_FILE, {"type": "sentencepiece", "model_file": SENTENCEPIECE_FILE,
                                                       "vocab_size": self.vocab_size})

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def _load_word_vocab(directory: Path):
    from .vocab import Vocab  # the word vocabulary lives in hmmlvd.data.vocab

    return Vocab.load(directory)


def _load_hf(directory: Path, meta: dict) -> HFTokenizer:
    return HFTokenizer(directory / str(meta.get("files", HF_FOLDER)))


def _load_sentencepiece(directory: Path, meta: dict) -> SentencePieceTokenizer:
    path = directory / str(meta.get("model_file", SENTENCEPIECE_FILE))
    if not path.is_file():
        raise ValueError(f"{path} is missing; a sentencepiece tokenizer folder needs its .model file")
    return SentencePieceTokenizer(path.read_bytes())


def load_tokenizer(directory: str | os.PathLike):
    """Load the tokenizer saved in ``directory`` (by ``save``), whatever its type."""
    directory = Path(directory)
    meta = read_json(directory / TOKENIZER_FILE)
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind == "word":
        return _load_word_vocab(directory)
    if kind == "hf":
        return _load_hf(directory, meta)
    if kind == "sentencepiece":
        return _load_sentencepiece(directory, meta)
    raise ValueError(f"{directory / TOKENIZER_FILE} has unknown tokenizer type {kind!r}; "
                     "expected 'word', 'hf' or 'sentencepiece'")


def build_tokenizer(spec: str, corpus: Iterable[str] | None = None):
    """A tokenizer from a ``--tokenizer`` spec.

    * ``word`` -- the word vocabulary of ``corpus`` (lines of text), :class:`hmmlvd.data.vocab.Vocab`;
    * ``hf:NAME_OR_PATH`` -- a Hugging Face tokenizer (a local folder, or a name in the HF cache);
    * ``sentencepiece:bpe:SIZE`` or ``sentencepiece:unigram:SIZE`` -- train one on ``corpus``.
    """
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        return HFTokenizer(rest)
    if kind not in ("word", "sentencepiece"):
        raise ValueError(f"unknown tokenizer spec {spec!r}; use word, hf:NAME_OR_PATH, sentencepiece:bpe:SIZE "
                         "or sentencepiece:unigram:SIZE")
    if corpus is None:
        raise ValueError(f"building the {kind} tokenizer needs the corpus text")
    if kind == "word":
        from .vocab import Vocab

        return Vocab.from_corpus(corpus)
    model_type, _, size = rest.partition(":")
    if not size.isdigit():
        raise ValueError(f"expected sentencepiece:bpe:SIZE or sentencepiece:unigram:SIZE, got {spec!r}")
    return SentencePieceTokenizer.train(corpus, int(size), model_type)
