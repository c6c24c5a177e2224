"""The ``hmmlvd`` entry point (exit codes, stderr), ``info``, ``score`` and ``generate`` with constraints."""
import io
import math
import subprocess
import sys

import pytest

from hmmlvd import HMM


def test_exit_codes_and_messages_of_the_entry_point(hmmlvd, tmp_path):
    code, out, err = hmmlvd()
    assert code == 2 and out == "" and "the following arguments are required: COMMAND" in err
    code, _, err = hmmlvd("bogus")
    assert code == 2 and "invalid choice: 'bogus'" in err
    code, _, err = hmmlvd("generate", tmp_path, "--max-new-tokens", "many")
    assert code == 2 and "invalid int value: 'many'" in err
    code, _, err = hmmlvd("eval", tmp_path, "--protocol", "strided")
    assert code == 2 and "invalid choice: 'strided'" in err
    code, out, err = hmmlvd("info", tmp_path / "missing")
    assert code == 2 and out == "" and err.startswith("hmmlvd info: error: ") and "config.json does not exist" in err
    code, _, err = hmmlvd("train", "--out", tmp_path, "--eval-protocols", "strided")   # checked before any data
    assert code == 2 and err.startswith("hmmlvd train: error: eval_protocols (--eval-protocols)")
    code, out, _ = hmmlvd("--help")
    assert code == 0 and all(name in out for name in ("train", "eval", "score", "generate", "info"))


@pytest.mark.slow
def test_python_dash_m_hmmlvd_exits_with_the_same_codes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hmmlvd", "info", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("hmmlvd info: error: ") and done.stdout == ""
    done = subprocess.run([sys.executable, "-m", "hmmlvd"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: hmmlvd" in done.stderr


def test_info_describes_the_saved_hmm(hmmlvd, word_model):
    directory, lm = word_model
    code, out, err = hmmlvd("info", directory)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == repr(HMM.from_pretrained(directory))
    assert lines[-1] == f"parameters: {lm.hmm.num_parameters():,}"
    assert lm.hmm.num_parameters() == 4 + 11 * 16 + 12 * 4 * lm.hmm.vocab_size     # initial, transitions, emissions


def test_score_texts_and_file(hmmlvd, word_model):
    directory, lm = word_model
    code, out, _ = hmmlvd("score", directory, "the river", "a bank")
    assert code == 0
    lines = out.splitlines()
    expected = lm.score(["the river", "a bank"])
    assert float(lines[1].split("\t")[0]) == pytest.approx(expected[0].total_log_prob, abs=1e-4)
    assert lines[-1].startswith("total") and "sliding, window 12" in lines[-1]
    texts_file = directory.parent / "texts.txt"
    texts_file.write_text("the river\n\na bank\n")
    code, out, _ = hmmlvd("score", directory, "--file", texts_file, "--per-token")
    assert code == 0
    assert len(out.splitlines()) == 2 + 2 + sum(s.num_tokens for s in expected)    # header, texts, tokens, total
    code, _, err = hmmlvd("score", directory / "missing", "the river")
    assert code == 2 and "does not exist" in err
    code, _, err = hmmlvd("score", directory)
    assert code == 2 and "nothing to score" in err


def test_score_reads_stdin(hmmlvd, word_model, monkeypatch):
    directory, lm = word_model
    monkeypatch.setattr(sys, "stdin", io.StringIO("the river bank\n\n  \nthe cat sat on the mat .\n"))
    code, out, _ = hmmlvd("score", directory, "--file", "-")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()[1:-1]]
    expected = lm.score(["the river bank", "the cat sat on the mat ."])
    assert [row[3] for row in rows] == ["the river bank", "the cat sat on the mat ."]
    for row, score in zip(rows, expected):
        assert float(row[0]) == pytest.approx(score.total_log_prob, abs=1e-4) and int(row[1]) == score.num_tokens
    total = math.fsum(s.total_log_prob for s in expected)
    assert f"log_prob={total:.4f}" in out.splitlines()[-1]


def test_generate_with_keywords(hmmlvd, word_model):
    directory, _ = word_model
    code, out, _ = hmmlvd("generate", directory, "--prefix", "the", "--max-new-tokens", "6", "--keywords", "river",
                          "--num-samples", "3", "--seed", "0")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("# p(constraint | prefix)") and len(lines) == 4
    assert all(line.startswith("the ") and "river" in line.split()[1:] for line in lines[1:])
    code, _, err = hmmlvd("generate", directory, "--keywords", "qqqq")
    assert code == 2 and "not in the vocabulary" in err


def _continuations(out, prefix):
    lines = out.splitlines()
    assert lines[0].startswith("# p(constraint | prefix)")
    assert all(line.startswith(prefix + " ") for line in lines[1:])
    return [line[len(prefix) + 1:].split() for line in lines[1:]]


def test_generate_banned_and_length_constraints_hold_in_every_sample(hmmlvd, word_model):
    directory, lm = word_model
    options = ["--prefix", "the", "--max-new-tokens", "8", "--num-samples", "30", "--seed", "1"]
    code, out, _ = hmmlvd("generate", directory, *options, "--banned", "river", "bank", "--min-length", "2",
                          "--max-length", "4", "--end-word", ".")
    assert code == 0
    samples = _continuations(out, "the")
    assert len(samples) == 30
    for words in samples:
        assert len(words) == 8 and not {"river", "bank"} & set(words), words
        assert "." in words and 2 <= words.index(".") <= 4, words       # the text ends after 2..4 tokens
    # the constraint bites: unconstrained samples of this model break it
    free = [lm.decode(t).split() for t in [lm.encode(s) for s in lm.generate("the", 8, seed=1, num_samples=30)]]
    assert any({"river", "bank"} & set(w) or "." not in w or not 2 <= w.index(".") <= 4 for w in free)
    # the printed probability is the model's
    constraint = lm.banned(["river", "bank"])
    code, out, _ = hmmlvd("generate", directory, *options, "--banned", "river", "bank")
    expected = float(lm.constraint_log_prob("the", constraint, 8)[0])
    assert f"(log {expected:.3f})" in out.splitlines()[0]
    assert all(not {"river", "bank"} & set(words) for words in _continuations(out, "the"))


def test_generate_rejects_bad_constraint_values(hmmlvd, word_model):
    directory, _ = word_model
    code, _, err = hmmlvd("generate", directory, "--max-new-tokens", "5", "--min-length", "6")
    assert code == 2 and "min_length" in err
    code, _, err = hmmlvd("generate", directory, "--max-new-tokens", "3", "--end-word", "river bank")
    assert code == 2 and "single token" in err


def test_generated_text_is_a_seeded_function_of_the_arguments(hmmlvd, word_model):
    directory, _ = word_model
    argv = ("generate", directory, "--prefix", "a", "--max-new-tokens", "4", "--num-samples", "4", "--seed", "5")
    first, second = hmmlvd(*argv), hmmlvd(*argv)
    assert first[0] == 0 and first == second and len(first[1].splitlines()) == 4
