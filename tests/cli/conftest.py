"""Fixtures of the CLI tests: the tiny encoder of the LVD tests, a synthetic WikiText folder, a saved
word-level language model, and a helper that runs ``hmmlvd`` in-process like the console script."""
from __future__ import annotations

import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.cli import main
from hmmlvd.data import Vocab
from hmmlvd.lm import LanguageModel
from tests.lvd.conftest import tiny_encoder  # noqa: F401  (re-exported fixture)

CORPUS = ["the river bank was muddy .", "the fish swam in the river .", "a bank holds money .",
          "the cat sat on the mat ."] * 20


@pytest.fixture
def hmmlvd(capsys):
    """``hmmlvd(*argv)`` -> (exit code, stdout, stderr), exactly as the console script would end."""
    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    """A random HMM (window 12) over the word vocabulary of CORPUS, saved as a language model folder."""
    vocab = Vocab.from_corpus(CORPUS)
    hmm = HMM.random(HMMConfig(num_states=4, vocab_size=vocab.vocab_size, seq_len=12), seed=0,
                     dtype=torch.float64)
    directory = tmp_path_factory.mktemp("lm")
    LanguageModel(hmm, vocab).save_pretrained(directory)
    return directory, LanguageModel(hmm, vocab)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A synthetic WikiText-2 folder (wiki.{train,valid,test}.tokens) over 19 words."""
    folder = tmp_path_factory.mktemp("wiki")
    for split, count in (("train", 300), ("valid", 40), ("test", 40)):
        lines = [" ".join(f"w{(i * 7 + j * 3) % 19}" for j in range(i % 10)) for i in range(count)]
        (folder / f"wiki.{split}.tokens").write_text("\n".join(lines) + "\n")
    return folder
