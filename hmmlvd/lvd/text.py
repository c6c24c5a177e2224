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


def suffix_texts(window_ids: Sequence[int], tokenizer, unk_token: str, eos_token: str) -> list[str]:
    """The texts of the suffixes ``x_t..x_T`` of one window of token ids, for every ``t``.

    A word vocabulary joins its words; any other tokenizer decodes each suffix.
    """
    if hasattr(tokenizer, "id_to_word"):
        words = [tokenizer.id_to_word(i) for i in window_ids]
        raw = [" ".join(words[t:]) for t in range(len(words))]
    else:
        raw = [tokenizer.decode(list(window_ids[t:])) for t in range(len(window_ids))]
    return [detokenize(text, unk_token, eos_token) for text in raw]
