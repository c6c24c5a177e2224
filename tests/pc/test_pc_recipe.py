"""pc.train_hclt picks the setting that is best on validation and returns its best parameters."""
import torch

from hmmlvd import em, pc


def test_train_hclt_selects_valid_best_setting_and_restores_its_parameters():
    generator = torch.Generator().manual_seed(0)
    base = (torch.rand(1, 6, generator=generator) < 0.5).long()
    noisy = lambda n: base.expand(n, 6) ^ (torch.rand(n, 6, generator=generator) < 0.3).long()
    train, valid = noisy(12), noisy(200)                          # few rows: over-fitting is real
    recipe = pc.HCLTRecipe(num_latents=4, minibatch_epochs=6, fullbatch_epochs=2, batch_size=4, patience=3,
                           grid=(pc.Regularization(0.0), pc.Regularization(2.0, 0.05, 2.0),
                                 pc.Regularization(8.0, 0.1, 8.0)))
    result = pc.train_hclt(train, valid, recipe, progress=False)
    best = max(result.trials, key=lambda trial: trial.best_valid)
    assert result.chosen == best.setting and result.best_valid == best.best_valid
    ll = em.mean_log_likelihood(result.circuit, valid, 64, torch.device("cpu"))
    assert abs(ll - result.best_valid) < 1e-5                     # the best-on-valid parameters were restored


def test_mini_batch_phase_runs_its_whole_schedule_and_full_batch_stops_after_patience():
    generator = torch.Generator().manual_seed(1)
    base = (torch.rand(1, 6, generator=generator) < 0.5).long()
    noisy = lambda n: base.expand(n, 6) ^ (torch.rand(n, 6, generator=generator) < 0.3).long()
    train, valid = noisy(12), noisy(200)
    recipe = pc.HCLTRecipe(num_latents=4, minibatch_epochs=8, fullbatch_epochs=30, batch_size=4, patience=2,
                           grid=(pc.Regularization(0.0),))
    trial = pc.train_hclt(train, valid, recipe, progress=False).trials[0]
    mini, full = trial.valid_curves["mini-batch"], trial.valid_curves["full-batch"]
    assert len(mini) == 8                                  # never cut short, however noisy
    assert len(full) < 30                                  # 12 rows: full-batch EM over-fits and stops
    assert max(full[-2:]) <= max(mini + full[:-2])        # it stopped after 2 epochs without a new best
