"""Builders for common constraints, as minimal DFAs over token ids.

Phrases are sequences of token ids (a keyword is a phrase of one token). Turning words into
token ids is the tokenizer's job; :class:`hmmlvd.LanguageModel` offers text-level helpers.
"""
from __future__ import annotations

import operator
from typing import Sequence

from .dfa import DFA, complement, intersect, union


def _token_ids(phrase) -> tuple[int, ...] | None:
    """A phrase (a sequence of integer ids, or one id; Python, numpy or torch integers) as a tuple of ints."""
    try:
        return (operator.index(phrase),)
    except TypeError:
        pass
    try:
        return tuple(operator.index(token) for token in phrase)
    except TypeError:
        return None


def _check_phrases(phrases: Sequence[Sequence[int]], vocab_size: int, what: str) -> list[tuple[int, ...]]:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if isinstance(phrases, (str, bytes)) or len(phrases) == 0:
        raise ValueError(f"{what} needs a non-empty list of phrases (each a list of token ids), got {phrases!r}")
    checked = []
    for given in phrases:
        phrase = _token_ids(given)
        if phrase is None:
            raise ValueError(f"{what}: a phrase must be a list of integer token ids, got {given!r}")
        if not phrase:
            raise ValueError(f"{what}: every phrase needs at least one token, got an empty phrase")
        for token in phrase:
            if not 0 <= token < vocab_size:
                raise ValueError(
                    f"{what}: token id {token} in phrase {list(phrase)} is outside the vocabulary "
                    f"[0, {vocab_size})"
                )
        checked.append(phrase)
    return checked


def contains_phrase(phrase: Sequence[int], vocab_size: int) -> DFA:
    """Accepts the strings in which ``phrase`` occurs as a contiguous run of tokens.

    State ``i`` means "the longest suffix read so far that is a prefix of the phrase has length i"
    (the Knuth-Morris-Pratt automaton); state ``len(phrase)`` is absorbing and accepting.
    """
    (phrase,) = _check_phrases([phrase], vocab_size, "contains_phrase")
    length = len(phrase)
    defaults, exceptions = [], []
    for matched in range(length):
        moves = {}
        for token in set(phrase):
            text = phrase[:matched] + (token,)
            overlap = next(k for k in range(len(text), -1, -1) if text[len(text) - k:] == phrase[:k])
            moves[token] = overlap
        defaults.append(0)
        exceptions.append(moves)
    defaults.append(length)
    exceptions.append({})
    return DFA(vocab_size, defaults, exceptions, accepting=[length]).minimize()


def all_of(phrases: Sequence[Sequence[int]], vocab_size: int) -> DFA:
    """Accepts the strings that contain every phrase, in any order (the keyword constraint)."""
    phrases = _check_phrases(phrases, vocab_size, "all_of")
    return intersect(*(contains_phrase(p, vocab_size) for p in phrases))


def any_of(phrases: Sequence[Sequence[int]], vocab_size: int) -> DFA:
    """Accepts the strings that contain at least one of the phrases."""
    phrases = _check_phrases(phrases, vocab_size, "any_of")
    return union(*(contains_phrase(p, vocab_size) for p in phrases))


def none_of(phrases: Sequence[Sequence[int]], vocab_size: int) -> DFA:
    """Accepts the strings that contain none of the phrases (banned words)."""
    _check_phrases(phrases, vocab_size, "none_of")
    return complement(any_of(phrases, vocab_size))


def length_between(min_length: int, max_length: int, vocab_size: int, end_token: int | None = None) -> DFA:
    """Accepts the strings whose length lies in ``[min_length, max_length]``.

    With ``end_token`` the text ends at the first ``end_token`` (what follows it is free), so the
    length counted is the number of tokens before it, or all tokens when it never appears.
    """
    for name, value in (("min_length", min_length), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if min_length > max_length:
        raise ValueError(f"min_length ({min_length}) must not exceed max_length ({max_length})")
    if end_token is not None:
        _check_phrases([[end_token]], vocab_size, "length_between end_token")
    # States 0..max_length count tokens; max_length + 1 = too long (absorbing);
    # with an end token, ended_ok / ended_bad are absorbing after the text has ended.
    too_long, ended_ok, ended_bad = max_length + 1, max_length + 2, max_length + 3
    defaults, exceptions = [], []
    for count in range(max_length + 1):
        defaults.append(count + 1)
        exceptions.append({} if end_token is None else {end_token: ended_ok if count >= min_length else ended_bad})
    defaults += [too_long, ended_ok, ended_bad]
    exceptions += [{}, {}, {}]
    accepting = [*range(min_length, max_length + 1), ended_ok]
    return DFA(vocab_size, defaults, exceptions, accepting).minimize()
