"""em.fit's patience and keep-best on valid: the stopping rule, the restored parameters, exact resume."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.em import Constant, ParameterGroup, fit


class ScriptedModel:
    """An EM model whose validation curve is a given list: its one parameter group is one-hot on the number of
    epochs done (full-batch EM with η = 1 and no pseudocount moves it one slot per epoch), and its log-likelihood
    after epoch e is ``script[e]``. The state lives in the parameters only, so checkpoints capture it."""

    def __init__(self, script: list[float]):
        self.script = script
        self.theta = torch.zeros(len(script) + 1, dtype=torch.float64)
        self.theta[0] = 1.0
        self.accumulate_calls = 0

    @property
    def epochs_done(self) -> int:
        return int(self.theta.argmax())

    def parameter_groups(self):
        return {"theta": ParameterGroup(self.theta, dim=0)}

    def set_parameters(self, values):
        self.theta = values["theta"]

    def zero_counts(self):
        return {"theta": torch.zeros_like(self.theta)}

    def accumulate_counts(self, batch, counts):
        self.accumulate_calls += 1
        counts["theta"][self.epochs_done + 1] += len(batch)
        return torch.zeros(len(batch), dtype=torch.float64)

    def log_likelihood(self, batch):
        return torch.full((len(batch),), self.script[self.epochs_done - 1], dtype=torch.float64)


DATA, VALID = torch.zeros(4, 1, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long)
#            epoch:  0    1     2     3     4     5     6     7     8     9
SCRIPT = [-5.0, -4.0, -4.0, -4.5, -3.0, -3.5, -3.25, -3.125, -2.0, -1.0]


def _fit(model, **options):
    return fit(model, DATA, Constant(1.0, len(model.script)), full_batch=True, pseudocount=0.0, valid=VALID,
               progress=False, **options)


@pytest.mark.parametrize("patience, best, stopped", [
    (1, 1, 2),        # a tie (epoch 2) is not an improvement
    (2, 1, 3),
    (3, 4, 7),        # the new best at epoch 4 resets the count; epochs 5, 6, 7 are not better
    (4, 9, None),     # never 4 epochs in a row without a new best: the schedule runs out
])
def test_patience_stops_after_that_many_epochs_without_a_strictly_better_valid(patience, best, stopped):
    model = ScriptedModel(SCRIPT)
    history = _fit(model, patience=patience)
    last = len(SCRIPT) - 1 if stopped is None else stopped
    assert (history.best_epoch, history.stopped_epoch) == (best, stopped)
    assert history.valid_log_likelihood == SCRIPT[:last + 1]
    assert len(history.train_log_likelihood) == last + 1 and model.accumulate_calls == last + 1
    assert model.epochs_done == last + 1                 # without keep_best: the parameters of the last epoch


def test_without_patience_every_epoch_runs_and_the_best_epoch_is_recorded():
    history = _fit(ScriptedModel(SCRIPT[:8]))
    assert (history.best_epoch, history.stopped_epoch, len(history.valid_log_likelihood)) == (4, None, 8)


def test_patience_reached_on_the_last_epoch_is_not_an_early_stop():
    history = _fit(ScriptedModel(SCRIPT[:4]), patience=2)     # epochs 2, 3 not better: the schedule ends anyway
    assert (history.best_epoch, history.stopped_epoch) == (1, None)


@pytest.mark.parametrize("patience", [None, 3])
def test_keep_best_restores_exactly_the_best_epochs_parameters(patience):
    model = ScriptedModel(SCRIPT[:8])                          # best epoch 4, then 5, 6, 7 worse
    history = _fit(model, patience=patience, keep_best=True)
    assert history.best_epoch == 4 and len(history.valid_log_likelihood) == 8
    expected = torch.zeros_like(model.theta)
    expected[5] = 1.0                                          # the parameters after epoch 4
    assert torch.equal(model.theta, expected)
    assert model.log_likelihood(VALID).tolist() == [SCRIPT[4]] * 3


@pytest.mark.parametrize("kill_after", [3, 5, 7])            # before the best epoch, after it, when stopped
def test_resume_with_patience_and_keep_best_stops_and_restores_as_uninterrupted(tmp_path, kill_after):
    class Killed(Exception):
        pass

    def kill(epoch, history):
        if epoch + 1 == kill_after:
            raise Killed

    reference = ScriptedModel(SCRIPT)
    expected = _fit(reference, patience=3, keep_best=True)
    with pytest.raises(Killed):
        _fit(ScriptedModel(SCRIPT), patience=3, keep_best=True, checkpoint_dir=tmp_path, on_epoch_end=kill)
    resumed = ScriptedModel(SCRIPT)
    history = _fit(resumed, patience=3, keep_best=True, checkpoint_dir=tmp_path, resume=True)
    assert history.as_dict() == expected.as_dict() and expected.stopped_epoch == 7
    assert torch.equal(resumed.theta, reference.theta)
    assert resumed.accumulate_calls == 8 - min(kill_after, 8)  # nothing finished is run again


def test_mini_batch_hmm_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    teacher = HMM.random(HMMConfig(num_states=3, vocab_size=6, seq_len=8), seed=99)
    data = teacher.sample(48, generator=torch.Generator().manual_seed(0))
    valid = teacher.sample(100, generator=torch.Generator().manual_seed(1))
    config = HMMConfig(num_states=8, vocab_size=6, seq_len=8)
    options = dict(batch_size=16, pseudocount=0.0, valid=valid, seed=0, progress=False, patience=3, keep_best=True)
    reference = HMM.random(config, seed=1)
    expected = fit(reference, data, Constant(0.25, 12), **options)
    # the valid curve of this run peaks at epoch 2 and patience stops it after epoch 5 of 12
    assert (expected.best_epoch, expected.stopped_epoch) == (2, 5)

    calls, original = {"n": 0}, HMM.accumulate_counts

    def killed_in_epoch_four(self, batch, counts):
        calls["n"] += 1
        if calls["n"] == 14:                                   # 3 batches per epoch: epoch 4, second batch
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, counts)

    monkeypatch.setattr(HMM, "accumulate_counts", killed_in_epoch_four)
    with pytest.raises(KeyboardInterrupt):
        fit(HMM.random(config, seed=1), data, Constant(0.25, 12), checkpoint_dir=tmp_path, checkpoint_every=1,
            **options)
    monkeypatch.setattr(HMM, "accumulate_counts", original)
    resumed = HMM.random(config, seed=7)
    history = fit(resumed, data, Constant(0.25, 12), checkpoint_dir=tmp_path, resume=True, **options)
    got, want = history.as_dict(), expected.as_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():                   # one key at a time: pytest.approx takes no nested dicts
        assert got[key] == (pytest.approx(value) if isinstance(value, list) else value), key
    assert history.valid_log_likelihood == expected.valid_log_likelihood       # bit for bit
    for name, group in reference.parameter_groups().items():
        assert torch.equal(group.values, resumed.parameter_groups()[name].values), name


def test_patience_and_keep_best_are_validated(tmp_path):
    model = ScriptedModel(SCRIPT)
    for patience in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="patience must be a positive integer"):
            _fit(model, patience=patience)
    for options in (dict(patience=2), dict(keep_best=True)):
        with pytest.raises(ValueError, match="need a non-empty validation split"):
            fit(model, DATA, Constant(1.0, 2), progress=False, **options)
        with pytest.raises(ValueError, match="need a non-empty validation split"):
            fit(model, DATA, Constant(1.0, 2), valid=VALID[:0], progress=False, **options)
    assert model.accumulate_calls == 0
    _fit(ScriptedModel(SCRIPT), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different run"):      # a run without patience is another run
        _fit(ScriptedModel(SCRIPT), patience=2, checkpoint_dir=tmp_path, resume=True)
