"""The shared M-step and the schedules, checked against hand computations."""
import pytest
import torch

from hmmlvd.em import (Constant, GaussianGroup, LinearAnneal, ParameterGroup, TwoPhase, apply_m_step, gaussian_m_step,
                       m_step, normalize)


def test_m_step_full_step_is_smoothed_normalisation():
    params = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    counts = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 6.0]])
    out = m_step(params, counts, pseudocount=0.3, step_size=1.0, dim=-1)
    expected = torch.tensor([[3.1, 1.1, 0.1], [0.1, 0.1, 6.1]])
    torch.testing.assert_close(out, expected / expected.sum(1, keepdim=True))


def test_m_step_interpolates_with_step_size_along_any_dim():
    params = torch.tensor([[0.25, 0.5], [0.75, 0.5]])          # columns are distributions
    counts = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    out = m_step(params, counts, step_size=0.25, dim=0)
    target = torch.tensor([[0.25, 0.0], [0.75, 1.0]])
    torch.testing.assert_close(out, 0.75 * params + 0.25 * target)
    torch.testing.assert_close(out.sum(0), torch.ones(2))


def test_rows_without_evidence_keep_their_parameters():
    params = torch.tensor([[0.1, 0.9], [0.6, 0.4]])
    out = m_step(params, torch.tensor([[0.0, 0.0], [1.0, 3.0]]), step_size=0.5)
    torch.testing.assert_close(out[0], params[0])
    torch.testing.assert_close(out[1], 0.5 * params[1] + 0.5 * torch.tensor([0.25, 0.75]))


def test_normalize_rejects_negative_pseudocount():
    with pytest.raises(ValueError, match="pseudocount"):
        normalize(torch.ones(3), pseudocount=-1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"step_size": 0.0}, "step_size"), ({"step_size": 1.5}, "step_size"), ({"pseudocount": -0.1}, "pseudocount")])
def test_m_step_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        m_step(torch.full((2,), 0.5), torch.ones(2), **kwargs)


def test_m_step_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        m_step(torch.full((2,), 0.5), torch.ones(3))


def test_schedules():
    assert Constant(0.3, epochs=4).num_epochs == 4
    assert Constant(0.3, epochs=4)(2, 5, 10) == 0.3
    anneal = LinearAnneal(start=0.5, end=0.1, epochs=2)
    assert anneal(0, 0, 3) == pytest.approx(0.5)
    assert anneal(1, 2, 3) == pytest.approx(0.1)
    assert anneal(0, 2, 3) == pytest.approx(0.5 - 0.4 * 2 / 5)
    two = TwoPhase(phase1_epochs=2, phase1_step_size=1.0, phase2_epochs=1, phase2_step_size=0.2)
    assert two.num_epochs == 3
    assert [two(e, 0, 4) for e in range(3)] == [1.0, 1.0, 0.2]


@pytest.mark.parametrize("build", [lambda: Constant(0.0), lambda: LinearAnneal(start=2.0),
                                   lambda: TwoPhase(phase1_epochs=-1), lambda: Constant(epochs=1.5)])
def test_schedules_validate(build):
    with pytest.raises(ValueError):
        build()


def test_overwriting_counts_gives_the_same_update_and_leaves_parameters_alone():
    generator = torch.Generator().manual_seed(0)
    params = torch.rand(3, 5, 4, generator=generator)
    params /= params.sum(1, keepdim=True)
    counts = torch.rand(3, 5, 4, generator=generator)
    counts[1, :, 2] = 0.0                                   # a distribution without evidence
    original = params.clone()
    expected = m_step(params, counts, pseudocount=0.0, step_size=0.3, dim=1)
    out = m_step(params, counts.clone(), pseudocount=0.0, step_size=0.3, dim=1, overwrite_counts=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[1, :, 2], original[1, :, 2])
    assert torch.equal(params, original)


def test_gaussian_m_step_is_weighted_maximum_likelihood():
    x = torch.tensor([1.0, 2.0, 4.0])
    w = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    counts = torch.stack([w.sum(1), (w * x).sum(1), (w * x ** 2).sum(1)], dim=1)
    params = torch.tensor([[0.0, 1.0], [5.0, 2.0], [0.0, 1.0]])
    out = gaussian_m_step(params, counts, min_std=0.01)
    mean = (1 + 2 + 8) / 4
    std = (((1 - mean) ** 2 + (2 - mean) ** 2 + 2 * (4 - mean) ** 2) / 4) ** 0.5
    torch.testing.assert_close(out[0], torch.tensor([mean, std]))
    torch.testing.assert_close(out[1], params[1])                      # no weight: unchanged
    torch.testing.assert_close(out[2], torch.tensor([1.0, 0.01]))      # one point: std floored


def test_gaussian_m_step_interpolates_moments():
    params = torch.tensor([[0.0, 1.0]])
    counts = torch.tensor([[2.0, 8.0, 40.0]])                           # mean 4, E[x^2] 20
    out = gaussian_m_step(params, counts, min_std=1e-3, step_size=0.25)
    mean, second = 0.25 * 4.0, 0.75 * 1.0 + 0.25 * 20.0
    torch.testing.assert_close(out, torch.tensor([[mean, (second - mean ** 2) ** 0.5]]))
    groups = {"g": GaussianGroup(params, 1e-3), "c": ParameterGroup(torch.tensor([0.5, 0.5]), 0)}
    updated = apply_m_step(groups, {"g": counts, "c": torch.tensor([1.0, 3.0])}, pseudocount=0.0, step_size=0.25)
    torch.testing.assert_close(updated["g"], out)
    torch.testing.assert_close(updated["c"], torch.tensor([0.4375, 0.5625]))
    with pytest.raises(ValueError, match="Gaussian counts"):
        gaussian_m_step(params, torch.ones(1, 2), min_std=1e-3)
