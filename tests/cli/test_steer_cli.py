"""``hmmlvd distill-lm`` and ``hmmlvd generate --base-lm`` end to end on a tiny random GPT-2, every new flag's
help text, and the errors on bad values."""
import pytest

from hmmlvd.cli import build_parser
from tests.tiny_lm import save_tiny_gpt2, tiny_tokenizer


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny GPT-2 and an HMM (h=4, window 6) distilled from it by the CLI, with a random-init twin."""
    from hmmlvd.cli import main

    root = tmp_path_factory.mktemp("steer")
    lm_dir = save_tiny_gpt2(root / "gpt2")
    argv = ["distill-lm", str(lm_dir), "--out", str(root / "hmm"), "--num-samples", "64", "--heldout-samples", "16",
            "--num-tokens", "6", "--shard-size", "16", "--teacher", "hidden", "--num-states", "4",
            "--phase1-epochs", "1", "--phase2-epochs", "1", "--batch-size", "32", "--compare-random",
            "--sample-cache-dir", str(root / "samples"), "--device", "cpu", "--kmeans-backend", "torch",
            "--no-progress"]
    assert main(argv) == 0
    return lm_dir, root / "hmm"


def test_distill_lm_reports_held_out_likelihoods_side_by_side(distilled, hmmlvd):
    lm_dir, out = distilled
    import json

    report = json.loads((out / "results.json").read_text())
    assert set(report["models"]) == {"lvd", "random"} and report["teacher"] == "hidden"
    assert (out / "lvd" / "checkpoint").is_dir() and (out / "random" / "init" / "config.json").is_file()


@pytest.mark.parametrize("decoding, dtype", [("sample", "float32"), ("greedy", "float32"), ("beam", "float32"),
                                            ("sample", "bfloat16")])
def test_generate_steers_the_base_lm_to_every_keyword(distilled, hmmlvd, decoding, dtype):
    lm_dir, out = distilled
    samples = "3" if decoding != "greedy" else "1"
    code, printed, err = hmmlvd("generate", out / "lvd", "--base-lm", lm_dir, "--keywords", "river,cat|dog",
                                "--banned", "sea", "--max-new-tokens", "6", "--num-samples", samples,
                                "--seed", "0", "--decoding", decoding, "--prompt", "the", "--dtype", dtype)
    assert code == 0, err
    lines = printed.splitlines()
    assert len(lines) == int(samples)
    for line in lines:
        words = line.split()
        assert words[0] == "the" and len(words) == 7, line
        assert "river" in words[1:] and {"cat", "dog"} & set(words[1:]) and "sea" not in words[1:], line


def test_generate_refuses_a_window_overflow_and_another_tokenizer(distilled, hmmlvd, word_model, tmp_path):
    lm_dir, out = distilled
    code, _, err = hmmlvd("generate", out / "lvd", "--base-lm", lm_dir, "--keywords", "river", "--max-new-tokens", "7")
    assert code == 2 and "window" in err and "at most 6" in err
    code, _, err = hmmlvd("generate", word_model[0], "--base-lm", lm_dir, "--keywords", "river")
    assert code == 2 and "not a Hugging Face tokenizer" in err
    other = tmp_path / "other"
    save_tiny_gpt2(other)
    shuffled = tiny_tokenizer()
    shuffled.add_tokens(["extra"])                # one more token: another vocabulary
    shuffled.save_pretrained(other)
    code, _, err = hmmlvd("generate", out / "lvd", "--base-lm", other, "--keywords", "river")
    assert code == 2 and "differs from the base model's tokenizer" in err


def _subparser(name):
    parser = build_parser()
    return next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == name)[1]


@pytest.mark.parametrize("command", ["distill-lm", "generate"])
def test_every_flag_has_help_text(command):
    parser = _subparser(command)
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.option_strings or action.dest


@pytest.mark.parametrize("argv, message", [
    (["--num-samples", "0"], "num_samples must be a positive integer"),
    (["--heldout-samples", "-1"], "heldout_samples must be a positive integer"),
    (["--num-tokens", "0"], "num_tokens must be a positive integer"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--shard-size", "0"], "shard_size must be a positive integer"),
    (["--sample-batch-size", "0"], "batch_size must be a positive integer"),
    (["--num-states", "0"], "num_states must be >= 1"),
    (["--num-samples", "8", "--num-states", "16"], "below num_states=16"),
    (["--prompts", "/nonexistent/prompts.txt"], "is not a file"),
])
def test_distill_lm_rejects_bad_values(hmmlvd, tmp_path, argv, message):
    code, _, err = hmmlvd("distill-lm", tmp_path / "no-model", "--out", tmp_path / "out", *argv)
    assert code == 2 and message in err, err


def test_distill_lm_rejects_a_missing_model_and_bad_teacher_layer(hmmlvd, distilled, tmp_path):
    code, _, err = hmmlvd("distill-lm", tmp_path / "no-model", "--out", tmp_path / "out")
    assert code == 2 and "cannot load the causal LM" in err
    code, _, err = hmmlvd("distill-lm", distilled[0], "--out", tmp_path / "out", "--teacher", "hidden",
                          "--teacher-layer", "7", "--num-samples", "16", "--heldout-samples", "8", "--num-states", "2",
                          "--shard-size", "8", "--sample-cache-dir", tmp_path / "s", "--no-progress")
    assert code == 2 and "layer must be in" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill-lm", "m", "--out", "o", "--teacher", "kmeans"])


@pytest.mark.parametrize("argv, message", [
    (["--num-beams", "0"], "--num-beams must be a positive integer"),
    (["--decoding", "beam"], "without --base-lm"),
    (["--exact-length", "3", "--min-length", "1"], "--exact-length replaces"),
    (["--keywords", ",|,"], "names no word"),
    (["--any-keywords", "qqqq"], "not in the vocabulary"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
])
def test_generate_rejects_bad_values(hmmlvd, word_model, argv, message):
    code, _, err = hmmlvd("generate", word_model[0], "--max-new-tokens", "4", *argv)
    assert code == 2 and message in err, err


def test_beam_asks_for_no_more_sequences_than_beams(distilled, hmmlvd):
    lm_dir, out = distilled
    code, _, err = hmmlvd("generate", out / "lvd", "--base-lm", lm_dir, "--keywords", "river", "--max-new-tokens",
                          "6", "--decoding", "beam", "--num-beams", "2", "--num-samples", "3")
    assert code == 2 and "num_beams=2" in err


@pytest.mark.parametrize("dtype", [[], ["--dtype", "bfloat16"]], ids=["as_saved", "bfloat16"])
def test_exact_length_and_any_keywords_hold_on_the_word_model(hmmlvd, word_model, dtype):
    code, out, err = hmmlvd("generate", word_model[0], "--prefix", "the", "--max-new-tokens", "6", "--any-keywords",
                            "river,cat", "--exact-length", "3", "--end-word", ".", "--num-samples", "10", "--seed", "2",
                            *dtype)
    assert code == 0, err
    for line in out.splitlines()[1:]:
        words = line.split()[1:]
        assert words.index(".") == 3 and {"river", "cat"} & set(words[:6]), line


def test_steering_with_a_phrase_and_any_of(distilled, hmmlvd):
    lm_dir, out = distilled
    code, printed, err = hmmlvd("generate", out / "lvd", "--base-lm", lm_dir, "--keywords", "big dog",
                                "--any-keywords", "mat|sat", "--max-new-tokens", "6", "--num-samples", "4",
                                "--seed", "1")
    assert code == 0, err
    for line in printed.splitlines():
        words = line.split()
        assert len(words) == 6 and " big dog " in f" {line} " and {"mat", "sat"} & set(words), line
