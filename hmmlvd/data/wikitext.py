"""WikiText-2 (tokenized v1): read, verify, tokenise into id streams.

Reads ``wiki.{train,valid,test}.tokens`` (plain or ``.xz``) from a directory given as an
argument or by the ``HMMLVD_DATA`` environment variable, verifies the SHA-256 of the
uncompressed text, and falls back to ``datasets.load_dataset("wikitext", "wikitext-2-v1")``
when no directory is given. Every line (empty ones included) ends with ``<eos>``.
"""
from __future__ import annotations

import hashlib
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .vocab import Vocab

SPLITS = ("train", "valid", "test")
DATA_ENV = "HMMLVD_DATA"
SHA256 = {
    "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
NUM_TOKENS = {"train": 2_088_628, "valid": 217_646, "test": 245_569}
VOCAB_SIZE = 33_278


@dataclass(frozen=True)
class Corpus:
    """Token-id streams of the three splits and the tokenizer that produced them."""

    train: Tensor
    valid: Tensor
    test: Tensor
    tokenizer: object
    source: str

    def split(self, name: str) -> Tensor:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def split_file(directory: Path, split: str) -> Path:
    """The file of ``split`` in ``directory``: ``wiki.<split>.tokens`` or its ``.xz``."""
    for name in (f"wiki.{split}.tokens", f"wiki.{split}.tokens.xz"):
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"{directory} has no wiki.{split}.tokens or wiki.{split}.tokens.xz; "
                     "point --data-dir (or HMMLVD_DATA) at the WikiText-2 folder")


def read_split(directory: str | os.PathLike, split: str, verify: bool = True) -> str:
    """The text of one split; with ``verify`` its SHA-256 must match the published file."""
    path = split_file(Path(directory), split)
    raw = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHA256[split]:
            raise ValueError(f"{path} does not have the SHA-256 of WikiText-2 v1 {split} "
                             f"(got {digest}, expected {SHA256[split]}); the file is corrupted or another "
                             "version. Re-download it, or pass verify=False for a deliberate variant")
    return raw.decode("utf-8")


def _from_hub() -> dict[str, list[str]]:
    try:
        from datasets import load_dataset

        dataset = load_dataset("wikitext", "wikitext-2-v1")
    except Exception as error:  # any failure of the hub path is reported the same way
        raise ValueError(
            "no WikiText-2 directory was given and the Hugging Face fallback failed "
            f"({type(error).__name__}: {error}). Download wiki.{{train,valid,test}}.tokens (WikiText-2 v1, "
            f"tokenized) and pass --data-dir DIR or set {DATA_ENV}=DIR") from None
    names = {"train": "train", "valid": "validation", "test": "test"}
    return {split: [row["text"].rstrip("\n") for row in dataset[names[split]]] for split in SPLITS}


def read_lines(data_dir: str | os.PathLike | None = None, verify: bool = True) -> tuple[dict[str, list[str]], str]:
    """The lines of every split and where they came from (a directory, or the HF hub)."""
    data_dir = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if data_dir is None:
        return _from_hub(), "datasets:wikitext/wikitext-2-v1"
    directory = Path(data_dir)
    if not directory.is_dir():
        raise ValueError(f"WikiText-2 directory {directory} does not exist; pass --data-dir DIR or set {DATA_ENV}")
    lines = {}
    for split in SPLITS:
        text = read_split(directory, split, verify)
        lines[split] = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return lines, str(directory)


def encode_lines(lines: list[str], tokenizer) -> Tensor:
    """One id stream: each line's ids, then the tokenizer's end-of-line id when it has one."""
    eos = getattr(tokenizer, "eos_id", None)
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer.encode(line))
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def wikitext2(data_dir: str | os.PathLike | None = None, tokenizer=None, verify: bool = True) -> Corpus:
    """WikiText-2 as id streams. ``tokenizer`` defaults to the word :class:`Vocab` of train."""
    lines, source = read_lines(data_dir, verify)
    tokenizer = tokenizer if tokenizer is not None else Vocab.from_corpus(lines["train"])
    streams = {split: encode_lines(lines[split], tokenizer) for split in SPLITS}
    return Corpus(**streams, tokenizer=tokenizer, source=source)
