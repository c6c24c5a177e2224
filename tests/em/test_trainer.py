"""The EM loop: monotone full-batch EM, checkpoints and exact resume."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.em import Constant, LinearAnneal, TwoPhase, apply_m_step, fit, mean_log_likelihood
from hmmlvd.em import trainer
from hmmlvd.io import load_tensors, save_tensors

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


@pytest.mark.parametrize("schedule, batch_size, full_batch", [
    (LinearAnneal(0.9, 0.05, epochs=3), 48, False),        # annealed inside every epoch; last batch is short
    (TwoPhase(2, 0.7, 2, 0.15), 64, False),
    (LinearAnneal(0.8, 0.2, epochs=4), 64, True),
])
def test_fit_applies_exactly_the_schedules_step_sizes(monkeypatch, schedule, batch_size, full_batch):
    data = _data(200)
    applied = []

    def recording_m_step(groups, counts, **kwargs):
        applied.append(kwargs["step_size"])
        return apply_m_step(groups, counts, **kwargs)

    monkeypatch.setattr(trainer, "apply_m_step", recording_m_step)
    history = fit(HMM.random(CONFIG, seed=4), data, schedule, batch_size=batch_size, full_batch=full_batch,
                  progress=False)
    steps = 1 if full_batch else -(-len(data) // batch_size)
    # independent reference: the schedule's formula written out per update
    if isinstance(schedule, LinearAnneal):
        total = schedule.epochs * steps - 1
        expected = [schedule.start + (schedule.end - schedule.start) * min((e * steps + s) / max(total, 1), 1.0)
                    for e in range(schedule.epochs) for s in range(steps)]
    else:
        expected = [schedule.phase1_step_size if e < schedule.phase1_epochs else schedule.phase2_step_size
                    for e in range(schedule.num_epochs) for _ in range(steps)]
    assert applied == pytest.approx(expected, rel=1e-12, abs=0)
    if not full_batch:
        assert len(set(applied[:steps])) == steps or isinstance(schedule, TwoPhase)   # it moves within an epoch
    assert history.step_sizes == pytest.approx([expected[(e + 1) * steps - 1] for e in range(schedule.num_epochs)],
                                               rel=1e-12, abs=0)


def test_a_checkpoint_in_the_stored_format_resumes(tmp_path):
    """The on-disk format (parameters + meta: epoch, step, running, history, run) written by hand, as
    earlier versions wrote it, resumes to the same model as an uninterrupted run."""
    data, schedule = _data(96), LinearAnneal(0.6, 0.2, epochs=2)
    reference = HMM.random(CONFIG, seed=3)
    fit(reference, data, schedule, batch_size=32, seed=5, progress=False)
    # the parameters after the first epoch of the same run (interrupted at its end)
    def stop(epoch, history):
        raise KeyboardInterrupt("simulated kill")

    partial = HMM.random(CONFIG, seed=3)
    with pytest.raises(KeyboardInterrupt):
        fit(partial, data, schedule, batch_size=32, seed=5, progress=False, on_epoch_end=stop)
    run = {"num_examples": 96, "batch_size": 32, "seed": 5, "full_batch": False, "pseudocount": 0.1}
    meta = {"epoch": 1, "step": 0, "running": [0.0, 0], "run": run,
            "history": {"train_log_likelihood": [-1.0], "valid_log_likelihood": [], "step_sizes": [0.5]}}
    save_tensors(tmp_path / "checkpoint.safetensors",
                 {name: group.values for name, group in partial.parameter_groups().items()}, meta)
    resumed = HMM.random(CONFIG, seed=8)
    history = fit(resumed, data, schedule, batch_size=32, seed=5, checkpoint_dir=tmp_path, resume=True,
                  progress=False)
    assert history.train_log_likelihood[0] == -1.0 and len(history.train_log_likelihood) == 2
    for name, group in reference.parameter_groups().items():
        assert torch.equal(group.values, resumed.parameter_groups()[name].values), name
    _, written = load_tensors(tmp_path / "checkpoint.safetensors")
    assert set(written) == set(meta) and written["run"] == run and written["epoch"] == 2
