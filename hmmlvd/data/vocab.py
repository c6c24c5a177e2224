"""The word vocabulary of a whitespace-tokenised corpus (the PyTorch word-LM convention)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from ..io import TOKENIZER_FILE, atomic_write_json, read_json

UNK_TOKEN = "<unk>"
EOS_TOKEN = "<eos>"


class Vocab:
    """Words <-> ids. Ids follow first appearance in the corpus; ``<unk>`` and ``<eos>`` are words too.

    Follows the ``Tokenizer`` protocol: ``encode`` splits on whitespace and maps unknown
    words to ``<unk>``; ``encode_line`` adds the ``<eos>`` that ends every corpus line.
    """

    def __init__(self, words: Sequence[str], unk_token: str = UNK_TOKEN, eos_token: str = EOS_TOKEN):
        words = list(words)
        index = {word: i for i, word in enumerate(words)}
        if len(index) != len(words):
            raise ValueError("a vocabulary cannot list the same word twice")
        for token in (unk_token, eos_token):
            if token not in index:
                raise ValueError(f"the vocabulary must contain {token!r}; build it with Vocab.from_corpus")
        self.words = words
        self.index = index
        self.unk_token, self.eos_token = unk_token, eos_token
        self.unk_id, self.eos_id = index[unk_token], index[eos_token]
        self.vocab_size = len(words)

    @classmethod
    def from_corpus(cls, lines: Iterable[str], min_count: int = 1) -> "Vocab":
        """Every word of ``lines`` seen at least ``min_count`` times, plus ``<eos>`` and ``<unk>``."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        order: dict[str, None] = {}
        for line in lines:
            for word in line.split() + [EOS_TOKEN]:
                counts[word] += 1
                order.setdefault(word, None)
        words = [w for w in order if counts[w] >= min_count or w == EOS_TOKEN]
        if UNK_TOKEN not in words:
            words.append(UNK_TOKEN)
        return cls(words)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        return [self.index.get(word, self.unk_id) for word in text.split()]

    def encode_line(self, line: str) -> list[int]:
        """The ids of one corpus line followed by ``<eos>``."""
        return self.encode(line) + [self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.id_to_word(i) for i in ids)

    def id_to_word(self, token_id: int) -> str:
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
        return self.words[token_id]

    def save(self, directory: str | os.PathLike) -> None:
        atomic_write_json(Path(directory) / TOKENIZER_FILE,
                          {"type": "word", "words": self.words, "unk_token": self.unk_token,
                           "eos_token": self.eos_token, "vocab_size": self.vocab_size})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Vocab":
        path = Path(directory) / TOKENIZER_FILE
        meta = read_json(path)
        if not isinstance(meta, dict) or meta.get("type") != "word" or not isinstance(meta.get("words"), list):
            raise ValueError(f"{path} is not a word vocabulary (expected type 'word' with a 'words' list)")
        return cls(meta["words"], meta.get("unk_token", UNK_TOKEN), meta.get("eos_token", EOS_TOKEN))

    def __repr__(self) -> str:
        return f"Vocab({self.vocab_size} words)"
