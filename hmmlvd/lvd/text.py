"""Suffix texts for the encoder: WikiText conventions undone, special words mapped."""
from __future__ import annotations

import re
from typing import Sequence

_AT_SEPARATOR = re.compile(r" ?@([-,.])@ ?")
_UNK, _EOS = "<unk>", "<eos>"


def detokenize(text: str, unk_token: str, eos_token: str) -> str:
    """Undo WikiText's ``@-@``, ``@,@``, ``@.@`` and map ``<unk>``/``<eos>`` to the encoder's tokens."""
    text = _AT_SEPARATOR.sub(r"\1", text)
    return text.replace(_UNK, unk_token).replace(_EOS, eos_token)


def suffix_texts(window_words: Sequence[str], unk_token: str, eos_token: str) -> list[str]:
    """The texts of the suffixes ``x_t..x_T`` of one window, for every ``t``."""
    return [detokenize(" ".join(window_words[t:]), unk_token, eos_token) for t in range(len(window_words))]


def window_words(window_ids: Sequence[int], tokenizer) -> list[str]:
    """The surface strings of a window's ids: words for a word vocabulary, decoded pieces otherwise."""
    if hasattr(tokenizer, "id_to_word"):
        return [tokenizer.id_to_word(i) for i in window_ids]
    return [tokenizer.decode([int(i)]) for i in window_ids]
