"""Corpora, vocabularies and windows (stands alone: imports nothing else of hmmlvd but io)."""
from .vocab import EOS_TOKEN, UNK_TOKEN, Vocab
from .wikitext import SPLITS, Corpus, encode_lines, read_lines, read_split, wikitext2
from .windows import MISSING, chunk_windows, num_windows, windows

__all__ = ["EOS_TOKEN", "UNK_TOKEN", "Vocab", "SPLITS", "Corpus", "encode_lines", "read_lines", "read_split",
           "wikitext2", "MISSING", "chunk_windows", "num_windows", "windows"]
