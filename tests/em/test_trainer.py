"""The EM loop: monotone full-batch EM, checkpoints and exact resume."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.em import Constant, LinearAnneal, fit, mean_log_likelihood

CONFIG = HMMConfig(num_states=4, vocab_size=6, seq_len=8)


def _data(n=200, seed=0):
    teacher = HMM.random(HMMConfig(num_states=3, vocab_size=6, seq_len=8), seed=99)
    return teacher.sample(n, generator=torch.Generator().manual_seed(seed))


def test_full_batch_em_never_decreases_likelihood():
    data = _data()
    hmm = HMM.random(CONFIG, seed=1, dtype=torch.float64)
    previous = mean_log_likelihood(hmm, data, 64, hmm.device)
    for _ in range(15):
        fit(hmm, data, Constant(1.0, epochs=1), batch_size=64, pseudocount=0.0, full_batch=True, progress=False)
        current = mean_log_likelihood(hmm, data, 64, hmm.device)
        assert current >= previous - 1e-9
        previous = current


def test_mini_batch_em_improves_and_records_history():
    data, valid = _data(), _data(50, seed=1)
    hmm = HMM.random(CONFIG, seed=2)
    before = mean_log_likelihood(hmm, valid, 64, hmm.device)
    history = fit(hmm, data, LinearAnneal(0.5, 0.1, epochs=3), batch_size=32, valid=valid, progress=False)
    assert len(history.train_log_likelihood) == len(history.valid_log_likelihood) == 3
    assert history.valid_log_likelihood[-1] > before
    hmm.check_normalized()


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    data = _data()
    schedule = LinearAnneal(0.6, 0.1, epochs=3)
    reference = HMM.random(CONFIG, seed=3)
    expected_history = fit(reference, data, schedule, batch_size=32, seed=5, progress=False)

    interrupted = HMM.random(CONFIG, seed=3)
    calls = {"n": 0}
    original = HMM.accumulate_counts

    def crash_on_eleventh_batch(self, batch, counts):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, counts)

    monkeypatch.setattr(HMM, "accumulate_counts", crash_on_eleventh_batch)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, data, schedule, batch_size=32, seed=5, checkpoint_dir=tmp_path, checkpoint_every=3,
            progress=False)
    monkeypatch.setattr(HMM, "accumulate_counts", original)

    resumed = HMM.random(CONFIG, seed=3)
    history = fit(resumed, data, schedule, batch_size=32, seed=5, checkpoint_dir=tmp_path, resume=True,
                  progress=False)
    for name, group in reference.parameter_groups().items():
        assert torch.equal(group.values, resumed.parameter_groups()[name].values), name
    assert history.train_log_likelihood == pytest.approx(expected_history.train_log_likelihood, rel=1e-12)


def test_resume_refuses_checkpoint_of_another_run(tmp_path):
    data = _data(64)
    fit(HMM.random(CONFIG), data, Constant(0.5, epochs=1), batch_size=16, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run"):
        fit(HMM.random(CONFIG), data, Constant(0.5, epochs=2), batch_size=32, checkpoint_dir=tmp_path,
            resume=True, progress=False)
    other = HMM.random(HMMConfig(num_states=5, vocab_size=6, seq_len=8))
    with pytest.raises(ValueError, match="another model shape"):
        fit(other, data, Constant(0.5, epochs=2), batch_size=16, checkpoint_dir=tmp_path, resume=True,
            progress=False)


def test_fit_validates_arguments(tmp_path):
    hmm = HMM.random(CONFIG)
    with pytest.raises(ValueError, match="batch_size"):
        fit(hmm, _data(10), Constant(), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        fit(hmm, torch.empty(0, 8, dtype=torch.long), Constant(), progress=False)
    with pytest.raises(ValueError, match="pseudocount"):
        fit(hmm, _data(10), Constant(), pseudocount=-1.0, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        fit(hmm, _data(10), Constant(), resume=True, progress=False)
