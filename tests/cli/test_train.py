"""End to end on a synthetic corpus: hmmlvd train (LVD + random) then hmmlvd eval on the saved folder."""
import argparse
import json
import re

import pytest
import torch

import hmmlvd
from hmmlvd import HMM, LanguageModel
from hmmlvd.cli import eval as eval_command
from hmmlvd.cli import train as train_command
from hmmlvd.data import Vocab


def parse(argv):
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    train_command.add_parser(subparsers)
    eval_command.add_parser(subparsers)
    return parser.parse_args(argv)


def test_train_compare_random_then_eval(corpus_dir, tiny_encoder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(out), "--num-states", "3",
            "--lvd-windows", "12", "--train-windows", "0", "--batch-size", "16", "--phase1-epochs", "2",
            "--phase2-epochs", "1", "--encoder", tiny_encoder, "--cache-dir", str(tmp_path / "cache"),
            "--compare-random", "--eval-splits", "valid,test", "--sliding-max-tokens", "0", "--no-progress"]
    assert train_command.run(parse(argv)) == 0
    printed = capsys.readouterr().out
    for init in ("lvd", "random"):
        folder = out / init
        results = json.loads((folder / "results.json").read_text())
        assert results["init"] == init and len(results["history"]["train_log_likelihood"]) == 3
        assert (folder / "init" / "model.safetensors").is_file()
        hmm, vocab = HMM.from_pretrained(folder), Vocab.load(folder)
        assert hmm.num_states == 3 and hmm.vocab_size == vocab.vocab_size
        lm = hmmlvd.load(folder)                     # the folder is a LanguageModel: HMM plus its tokenizer
        assert isinstance(lm, LanguageModel) and torch.equal(lm.hmm.emissions, hmm.emissions)
        final = {(r["protocol"], r["split"]): r["perplexity"] for r in results["perplexity"] if r["stage"] == "final"}
        assert set(final) == {(p, s) for p in ("chunk", "sliding") for s in ("valid", "test")}
        assert f"test perplexity (sliding protocol, h=3, init={init})" in printed
        # hmmlvd eval on the saved folder reproduces the numbers printed by train
        assert eval_command.run(parse(["eval", str(folder), "--data-dir", str(corpus_dir), "--no-verify",
                                       "--protocol", "chunk", "sliding", "--no-progress"])) == 0
        lines = capsys.readouterr().out
        for protocol in ("chunk", "sliding"):
            match = re.search(rf"test perplexity \({protocol} protocol, h=3, init={init}\): ([0-9.]+)", lines)
            assert float(match.group(1)) == pytest.approx(final[(protocol, "test")], abs=0.006)
    assert json.loads((out / "lvd" / "results.json").read_text())["lvd_stats"]["num_windows"] == 12

    # --resume after a finished run re-uses the init and the final checkpoint: no EM epoch is repeated
    before = json.loads((out / "lvd" / "results.json").read_text())
    assert train_command.run(parse(argv[:1] + ["--init", "lvd"] + argv[1:argv.index("--compare-random")]
                                   + ["--out", str(out / "lvd"), "--resume", "--no-progress"])) == 0
    after = json.loads((out / "lvd" / "results.json").read_text())
    assert after["history"] == before["history"] and after["em_epoch_seconds"] == []


def test_no_checkpoints_skips_them_and_resume_reruns_em_from_the_init(corpus_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--init", "random", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(out),
            "--num-states", "3", "--train-windows", "0", "--batch-size", "16", "--phase1-epochs", "1",
            "--phase2-epochs", "1", "--eval-splits", "test", "--eval-protocols", "chunk", "--no-checkpoints",
            "--no-progress"]
    assert train_command.run(parse(argv)) == 0
    assert not (out / "checkpoint").exists() and (out / "init" / "model.safetensors").is_file()
    first = json.loads((out / "results.json").read_text())
    assert train_command.run(parse(argv + ["--resume"])) == 0
    again = json.loads((out / "results.json").read_text())
    assert len(again["em_epoch_seconds"]) == 2 and again["history"] == first["history"]


def test_bad_options_are_clear_errors(corpus_dir, tmp_path):
    with pytest.raises(ValueError, match="--eval-protocols"):
        train_command.run(parse(["train", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(tmp_path),
                                 "--eval-protocols", "strided"]))


def test_resume_after_an_interruption_mid_em_equals_an_uninterrupted_run(corpus_dir, tmp_path, monkeypatch):
    def argv(out):
        return ["train", "--init", "random", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(out),
                "--num-states", "3", "--train-windows", "0", "--batch-size", "16", "--phase1-epochs", "2",
                "--phase2-epochs", "1", "--eval-splits", "test", "--eval-protocols", "chunk", "--no-progress"]

    assert train_command.run(parse(argv(tmp_path / "straight"))) == 0
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())
    batches_per_epoch = -(-expected["em_windows"] // 16)

    original, calls = HMM.accumulate_counts, {"n": 0}

    def killed_in_the_second_epoch(self, batch, counts):
        calls["n"] += 1
        if calls["n"] == batches_per_epoch + 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, counts)

    monkeypatch.setattr(HMM, "accumulate_counts", killed_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_command.run(parse(argv(tmp_path / "killed")))
    monkeypatch.setattr(HMM, "accumulate_counts", original)
    assert not (tmp_path / "killed" / "results.json").exists()
    assert train_command.run(parse(argv(tmp_path / "killed") + ["--resume"])) == 0
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert resumed["history"] == expected["history"] and len(resumed["em_epoch_seconds"]) == 2
    straight, killed = HMM.from_pretrained(tmp_path / "straight"), HMM.from_pretrained(tmp_path / "killed")
    for name, group in straight.parameter_groups().items():
        assert torch.equal(group.values, killed.parameter_groups()[name].values), name
    assert [r["perplexity"] for r in resumed["perplexity"]] == [r["perplexity"] for r in expected["perplexity"]]


def test_every_epoch_is_reported_once(corpus_dir, tmp_path, capsys):
    argv = ["train", "--init", "random", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(tmp_path),
            "--num-states", "3", "--train-windows", "50", "--batch-size", "16", "--phase1-epochs", "2",
            "--phase2-epochs", "1", "--eval-splits", "test", "--eval-protocols", "chunk", "--no-checkpoints"]
    assert train_command.run(parse(argv)) == 0
    captured = capsys.readouterr()
    epoch_lines = [line for line in (captured.out + captured.err).splitlines() if re.search(r"\bepoch \d", line)]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], epoch_lines


def _train_worker(rank, argv, port):
    import os
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert train_command.run(parse(argv)) == 0


def test_train_under_two_processes_matches_one(corpus_dir, tiny_encoder, tmp_path):
    import socket
    import torch.multiprocessing as mp

    def argv(out):
        return ["train", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(out), "--num-states", "3",
                "--lvd-windows", "12", "--train-windows", "0", "--batch-size", "16", "--phase1-epochs", "1",
                "--phase2-epochs", "1", "--encoder", tiny_encoder, "--cache-dir", str(tmp_path / "cache"),
                "--kmeans-backend", "torch", "--eval-splits", "valid", "--sliding-max-tokens", "0", "--no-progress"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_train_worker, args=(argv(tmp_path / "two"), port), nprocs=2, join=True)
    assert train_command.run(parse(argv(tmp_path / "one"))) == 0
    one, two = HMM.from_pretrained(tmp_path / "one"), HMM.from_pretrained(tmp_path / "two")
    for name, group in one.parameter_groups().items():
        torch.testing.assert_close(two.parameter_groups()[name].values, group.values, rtol=0, atol=1e-6)
    results = [json.loads((tmp_path / folder / "results.json").read_text()) for folder in ("one", "two")]
    assert (results[0]["world_size"], results[1]["world_size"], results[1]["backend"]) == (1, 2, "gloo")
    for row_one, row_two in zip(results[0]["perplexity"], results[1]["perplexity"], strict=True):
        assert row_one["perplexity"] == pytest.approx(row_two["perplexity"], rel=1e-6)


def _killed_train_worker(rank, argv, port):
    """Every rank stops right after the first EM checkpoint (rank 0 has written it), as a kill would."""
    from hmmlvd.em import Checkpoint

    original = Checkpoint.save

    def save_then_die(self, model, state):
        original(self, model, state)
        raise SystemExit(3)

    Checkpoint.save = save_then_die
    _train_worker(rank, argv, port)


def test_resume_under_two_processes_continues_exactly(corpus_dir, tmp_path):
    import socket
    import torch.multiprocessing as mp

    def argv(out):
        return ["train", "--init", "random", "--data-dir", str(corpus_dir), "--no-verify", "--out", str(out),
                "--num-states", "3", "--train-windows", "0", "--batch-size", "16", "--phase1-epochs", "2",
                "--phase2-epochs", "1", "--eval-splits", "valid", "--eval-protocols", "chunk", "--no-progress"]

    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    mp.spawn(_train_worker, args=(argv(tmp_path / "straight"), free_port()), nprocs=2, join=True)
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_killed_train_worker, args=(argv(tmp_path / "killed"), free_port()), nprocs=2, join=True)
    assert (tmp_path / "killed" / "checkpoint").is_dir() and not (tmp_path / "killed" / "results.json").exists()
    mp.spawn(_train_worker, args=(argv(tmp_path / "killed") + ["--resume"], free_port()), nprocs=2, join=True)
    straight, resumed = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("straight", "killed"))
    assert resumed["world_size"] == 2 and len(resumed["em_epoch_seconds"]) == 2      # epochs 2 and 3 only
    assert resumed["history"] == straight["history"]
    one, two = HMM.from_pretrained(tmp_path / "straight"), HMM.from_pretrained(tmp_path / "killed")
    for name, group in one.parameter_groups().items():
        assert torch.equal(two.parameter_groups()[name].values, group.values), name
