"""pc.train_hclt: the two-stage search over hidden sizes and regularisation, its time budget, the restored
best parameters, a single-setting recipe on 256-category data, and exact resume."""
import pytest
import torch

from hmmlvd import em, pc
from hmmlvd.pc.recipe import PRESETS, search

A, B, C, D = (pc.Regularization(0.0), pc.Regularization(1.0), pc.Regularization(2.0, 0.01, 1.0),
              pc.Regularization(4.0))


def _fake_search(scores: dict, recipe: pc.HCLTRecipe, seconds_per_parameter: float = 0.0):
    """Run :func:`search` with trials scored by ``scores[(k, setting)]``; a trial of k costs k · 100 parameters
    and advances a fake clock by ``seconds_per_parameter`` per parameter."""
    clock = [0.0]

    def run_trial(k, setting):
        clock[0] += seconds_per_parameter * k * 100
        return pc.Trial(k, setting, k * 100, best_valid=scores[(k, setting)], seconds=seconds_per_parameter * k * 100)

    trials, skipped = search(recipe, run_trial, lambda k: k * 100, clock=lambda: clock[0])
    return [(trial.num_latents, trial.setting) for trial in trials], skipped


def test_search_grows_the_hidden_size_then_regularises_the_best_and_stops_at_the_first_setting_not_better():
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4, 8, 16), grid=(A, B, C, D), time_budget=None)
    scores = {(2, A): -5.0, (4, A): -4.0, (8, A): -4.5, (16, A): -1.0,     # 16 would win: never reached
              (4, B): -3.9, (4, C): -3.95, (4, D): -1.0}                    # D would win: never reached
    tried, skipped = _fake_search(scores, recipe)
    assert tried == [(2, A), (4, A), (8, A), (4, B), (4, C)] and skipped == []


def test_search_treats_a_tie_as_not_better():
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4, 8), grid=(A, B, C), time_budget=None)
    scores = {(2, A): -5.0, (4, A): -5.0, (8, A): 0.0, (2, B): -5.0, (2, C): 0.0}
    assert _fake_search(scores, recipe)[0] == [(2, A), (4, A), (2, B)]


def test_search_runs_every_trial_while_each_one_is_better():
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4, 8), grid=(A, B, C), time_budget=None)
    scores = {(2, A): -3.0, (4, A): -2.0, (8, A): -1.0, (8, B): -0.5, (8, C): -0.25}
    assert _fake_search(scores, recipe)[0] == [(2, A), (4, A), (8, A), (8, B), (8, C)]


def test_search_skips_the_trials_whose_predicted_seconds_overrun_the_budget():
    scores = {(2, A): -3.0, (4, A): -2.0, (8, A): -1.0, (16, A): 0.0, (8, B): 1.0, (8, C): 2.0}
    # trials take k seconds: 2 + 4 + 8 = 14 s spent; 16 more would overrun 20 s, and so would 8 more
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4, 8, 16), grid=(A, B, C), time_budget=20.0)
    assert _fake_search(scores, recipe, 0.01) == ([(2, A), (4, A), (8, A)], [(16, A), (8, B)])
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4, 8, 16), grid=(A, B, C), time_budget=23.0)   # 8 more fits
    assert _fake_search(scores, recipe, 0.01) == ([(2, A), (4, A), (8, A), (8, B)], [(16, A), (8, C)])
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4), grid=(A, B), time_budget=0.5)     # the first trial always runs
    assert _fake_search(scores, recipe, 0.01) == ([(2, A)], [(4, A), (2, B)])


def _noisy_binary(rows: int, generator: torch.Generator, variables: int = 6) -> torch.Tensor:
    base = (torch.rand(1, variables, generator=torch.Generator().manual_seed(0)) < 0.5).long()
    return base.expand(rows, variables) ^ (torch.rand(rows, variables, generator=generator) < 0.3).long()


def test_train_hclt_tries_several_settings_and_returns_the_best_trials_parameters():
    generator = torch.Generator().manual_seed(0)
    train, valid = _noisy_binary(12, generator), _noisy_binary(200, generator)    # few rows: over-fitting is real
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 4), minibatch_epochs=6, fullbatch_epochs=2, batch_size=4, patience=3,
                           grid=(pc.Regularization(0.0), pc.Regularization(2.0, 0.05, 2.0)))
    result = pc.train_hclt(train, valid, recipe, progress=False)
    tried = [(trial.num_latents, trial.setting) for trial in result.trials]
    assert len(tried) == 3 and {k for k, _ in tried} == {2, 4} and len({s for _, s in tried}) == 2   # both stages ran
    best = max(result.trials, key=lambda trial: trial.best_valid)
    assert (result.num_latents, result.chosen, result.best_valid) == (best.num_latents, best.setting, best.best_valid)
    assert all(trial.seconds > 0 for trial in result.trials) and result.seconds >= sum(t.seconds for t in result.trials)
    assert result.circuit.num_parameters == best.num_parameters and result.skipped == []
    ll = em.mean_log_likelihood(result.circuit, valid, 64, torch.device("cpu"))
    assert abs(ll - result.best_valid) < 1e-5                     # the best-on-valid parameters were restored


def test_mini_batch_phase_runs_its_whole_schedule_and_full_batch_stops_after_patience():
    generator = torch.Generator().manual_seed(1)
    train, valid = _noisy_binary(12, generator), _noisy_binary(200, generator)
    recipe = pc.HCLTRecipe(hidden_sizes=(4,), minibatch_epochs=8, fullbatch_epochs=30, batch_size=4, patience=2,
                           grid=(pc.Regularization(0.0),))
    trial = pc.train_hclt(train, valid, recipe, progress=False).trials[0]
    mini, full = trial.valid_curves["mini-batch"], trial.valid_curves["full-batch"]
    assert len(mini) == 8                                  # never cut short, however noisy
    assert len(full) < 30                                  # 12 rows: full-batch EM over-fits and stops
    assert max(full[-2:]) <= max(full[:-2])                # it stopped after 2 epochs without a new best
    assert trial.best_valid == max(mini + full)


def test_a_single_setting_recipe_trains_one_circuit_over_256_categories_of_uint8_pixels():
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 200, (40, 9), generator=generator, dtype=torch.uint8)   # 200..255 never seen
    recipe = pc.HCLTRecipe(hidden_sizes=(3,), grid=(pc.Regularization(0.1),), minibatch_epochs=2,
                           fullbatch_epochs=0, batch_size=16, mi_bins=8)
    result = pc.train_hclt(pixels[:30], pixels[30:], recipe, num_categories=256, progress=False)
    assert len(result.trials) == 1 and result.num_latents == 3 and result.trials[0].valid_curves.keys() == {"mini-batch"}
    assert result.circuit.num_parameters == 9 * 3 * 256 + 8 * 3 * 3 + 3     # inputs, 8 tree edges, root
    unseen = torch.full((1, 9), 255, dtype=torch.long)
    assert torch.isfinite(result.circuit.log_likelihood(unseen)).all()


def test_an_interrupted_search_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(3)
    train, valid = _noisy_binary(24, generator), _noisy_binary(100, generator)
    recipe = pc.HCLTRecipe(hidden_sizes=(2, 3), minibatch_epochs=4, fullbatch_epochs=3, batch_size=8,
                           grid=(pc.Regularization(0.0), pc.Regularization(1.0, 0.05, 1.0)), time_budget=None)
    expected = pc.train_hclt(train, valid, recipe, progress=False)
    calls, original = {"n": 0}, pc.Circuit.accumulate_counts

    def killed(self, batch, counts):
        calls["n"] += 1
        if calls["n"] == 30:                       # in the second trial (the first makes 4 · 3 + 3 updates)
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, counts)

    monkeypatch.setattr(pc.Circuit, "accumulate_counts", killed)
    with pytest.raises(KeyboardInterrupt):
        pc.train_hclt(train, valid, recipe, directory=tmp_path, progress=False)
    monkeypatch.setattr(pc.Circuit, "accumulate_counts", original)
    resumed = pc.train_hclt(train, valid, recipe, directory=tmp_path, resume=True, progress=False)
    assert [(t.num_latents, t.setting, t.valid_curves) for t in resumed.trials] == \
           [(t.num_latents, t.setting, t.valid_curves) for t in expected.trials]
    for name, group in expected.circuit.parameter_groups().items():
        assert torch.equal(group.values, resumed.circuit.parameter_groups()[name].values), name


def test_recipe_and_inputs_are_validated():
    for options, message in ((dict(hidden_sizes=()), "hidden_sizes"), (dict(hidden_sizes=(8, 4)), "increasing"),
                             (dict(hidden_sizes=(4, 4)), "increasing"), (dict(hidden_sizes=(0,)), "positive"),
                             (dict(time_budget=0.0), "time_budget"), (dict(grid=()), "grid"),
                             (dict(mi_bins=1), "mi_bins"), (dict(patience=0), "patience")):
        with pytest.raises(ValueError, match=message):
            pc.HCLTRecipe(**options)
    ids = torch.zeros(4, 3, dtype=torch.long)
    ids[0] = 1
    with pytest.raises(ValueError, match="integer id matrices"):
        pc.train_hclt(ids.float(), ids, progress=False)
    with pytest.raises(ValueError, match="same variables"):
        pc.train_hclt(ids, ids[:, :2], progress=False)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 1\)"):
        pc.train_hclt(ids, ids, num_categories=1, progress=False)
    with pytest.raises(ValueError, match="needs directory"):
        pc.train_hclt(ids, ids, resume=True, progress=False)
    assert PRESETS["fixed"].hidden_sizes == (32,) and PRESETS["search"] == pc.HCLTRecipe()
