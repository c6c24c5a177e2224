import hashlib
import lzma
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from hmmlvd.data import Vocab, read_lines, read_split, wikitext2
from hmmlvd.data import wikitext as wikitext2_module

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "wikitext-2"
REAL = Path(os.environ.get("HMMLVD_DATA", REAL))


def write_corpus(directory: Path, compress: bool = False) -> dict[str, str]:
    texts = {"train": " = A = \n\n a b @-@ c \n", "valid": " a d \n", "test": "\n b a \n"}
    for split, text in texts.items():
        path = directory / f"wiki.{split}.tokens"
        if compress:
            path.with_suffix(".tokens.xz").write_bytes(lzma.compress(text.encode()))
        else:
            path.write_text(text)
    return texts


@pytest.mark.parametrize("compress", [False, True])
def test_synthetic_corpus_follows_the_word_lm_convention(tmp_path, compress):
    write_corpus(tmp_path, compress)
    corpus = wikitext2(tmp_path, verify=False)
    vocab = corpus.tokenizer
    assert vocab.decode(corpus.train.tolist()) == "= A = <eos> <eos> a b @-@ c <eos>"
    assert vocab.decode(corpus.valid.tolist()) == "a <unk> <eos>"  # d is not in train
    assert vocab.decode(corpus.test.tolist()) == "<eos> b a <eos>"
    assert corpus.train.dtype == torch.long


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    write_corpus(tmp_path)
    with pytest.raises(ValueError, match="SHA-256 of WikiText-2 v1 train"):
        read_split(tmp_path, "train")


def test_missing_files_and_directories_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="--data-dir"):
        read_split(tmp_path, "valid")
    with pytest.raises(ValueError, match="does not exist"):
        wikitext2(tmp_path / "nope")


def test_hub_fallback_failure_says_what_to_do(monkeypatch):
    monkeypatch.delenv("HMMLVD_DATA", raising=False)
    broken = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("no network")

    broken.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", broken)
    with pytest.raises(ValueError, match="HMMLVD_DATA"):
        wikitext2()


def test_hub_fallback_uses_the_rows_as_lines(monkeypatch):
    monkeypatch.delenv("HMMLVD_DATA", raising=False)
    fake = types.ModuleType("datasets")
    rows = {"train": [" a b \n", ""], "validation": [" b \n"], "test": [" a \n"]}
    fake.load_dataset = lambda *args, **kwargs: {k: [{"text": t} for t in v] for k, v in rows.items()}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    corpus = wikitext2()
    assert corpus.tokenizer.decode(corpus.train.tolist()) == "a b <eos> <eos>"
    assert corpus.source.startswith("datasets:")


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real WikiText-2 not found at {REAL} (set HMMLVD_DATA)")
def test_real_wikitext2_checksums_counts_and_vocabulary():
    lines, source = read_lines(REAL)  # verifies the SHA-256 of every split
    for split in ("train", "valid", "test"):
        assert sum(len(line.split()) + 1 for line in lines[split]) == wikitext2_module.NUM_TOKENS[split]
    vocab = Vocab.from_corpus(lines["train"])
    assert vocab.vocab_size == wikitext2_module.VOCAB_SIZE
    other = {word for split in ("valid", "test") for line in lines[split] for word in line.split()}
    assert other <= set(vocab.words)  # valid and test need no <unk> mapping beyond the corpus' own
    raw = lzma.decompress((REAL / "wiki.valid.tokens.xz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == wikitext2_module.SHA256["valid"]
