"""lvd.recipe.train: the text recipe as a library call (no CLI), its config checks and its budget."""
import pytest
import torch

from hmmlvd import HMM, em
from hmmlvd.data import Corpus, Vocab, windows
from hmmlvd.lvd import DistillConfig
from hmmlvd.lvd.recipe import RecipeConfig, train


def _corpus():
    lines = [" ".join(f"w{(i * 7 + j * 3) % 19}" for j in range(i % 10)) for i in range(300)]
    vocab = Vocab.from_corpus(lines)
    stream = torch.tensor([t for line in lines for t in vocab.encode_line(line)])
    return Corpus(stream[:1200], stream[1200:1400], stream[1400:], vocab, "synthetic")


def _config(init, **changes):
    settings = dict(distill=DistillConfig(num_states=3, num_windows=12), init=init,
                    schedule=em.TwoPhase(1, 0.5, 1, 0.2), batch_size=16, pseudocount=1.0, seq_len=8,
                    train_stride=4, train_windows=100, eval_splits=("test",), eval_protocols=("chunk",),
                    device="cpu", progress=False)
    return RecipeConfig(**{**settings, **changes})


def test_random_init_recipe_runs_the_schedule_on_the_subsample(tmp_path):
    corpus, lines = _corpus(), []
    result = train(corpus, _config("random"), tmp_path, log=lines.append)
    assert result.em_windows == 100 and result.lvd_stats is None
    assert len(result.history.train_log_likelihood) == 2 and result.history.step_sizes == [0.5, 0.2]
    assert len(result.em_epoch_seconds) == 2
    assert [(r["stage"], r["split"], r["protocol"]) for r in result.perplexity] == [("init", "test", "chunk"),
                                                                                  ("final", "test", "chunk")]
    assert [line.split("]")[0] for line in lines] == ["[init", "[final"]
    # the saved init is the seeded random HMM; EM moved away from it and improved the valid likelihood
    init = HMM.from_pretrained(tmp_path / "init")
    assert torch.equal(init.emissions, HMM.random(init.config, seed=0).emissions)
    valid = windows(corpus.valid, 8, 8)
    assert em.mean_log_likelihood(result.hmm, valid, 64, result.hmm.device) > result.init_valid_log_likelihood
    assert result.perplexity[1]["perplexity"] < result.perplexity[0]["perplexity"]
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").is_file()


def test_without_a_directory_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(_corpus(), _config("random", checkpoints=False))
    assert list(tmp_path.iterdir()) == [] and result.hmm.num_states == 3


def test_config_is_validated():
    with pytest.raises(ValueError, match="init must be one of"):
        _config("kmeans")
    with pytest.raises(ValueError, match="--eval-protocols"):
        _config("lvd", eval_protocols=("strided",))
    with pytest.raises(ValueError, match="--eval-splits"):
        _config("lvd", eval_splits=("train",))
    with pytest.raises(ValueError, match="batch_size"):
        _config("lvd", batch_size=0)
    with pytest.raises(ValueError, match="train_stride"):
        _config("lvd", train_stride=0)
    assert _config("lvd").em_settings() == {"phase1_epochs": 1, "phase1_step_size": 0.5, "phase2_epochs": 1,
                                            "phase2_step_size": 0.2, "batch_size": 16, "pseudocount": 1.0,
                                            "seed": 0}
