"""The entropy-regularised M-step against scipy's general-purpose optimiser."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from hmmlvd.em import ParameterGroup, apply_m_step, entropy_regularized_normalize, m_step, normalize


def scipy_maximiser(counts: np.ndarray, tau: float) -> np.ndarray:
    """argmax over the simplex of Σ n log θ + τ H(θ), by BFGS on softmax logits."""
    def negative_objective(logits):
        log_theta = logits - np.logaddexp.reduce(logits)
        theta = np.exp(log_theta)
        return -(counts @ log_theta - tau * theta @ log_theta)
    start = np.log(counts + 1.0)
    result = minimize(negative_objective, start, method="BFGS", options={"gtol": 1e-11, "maxiter": 10_000})
    theta = np.exp(result.x - np.logaddexp.reduce(result.x))
    return theta


def objective(theta: np.ndarray, counts: np.ndarray, tau: float) -> float:
    log_theta = np.log(np.maximum(theta, 1e-300))
    return float(counts @ log_theta - tau * theta @ log_theta)


@pytest.mark.parametrize("tau", [0.05, 1.0, 30.0])
def test_entropy_normalize_matches_scipy(tau):
    counts = torch.tensor([[5.0, 1.0, 0.0, 2.5], [0.0, 0.0, 0.0, 7.0], [1e3, 2.0, 0.5, 0.0], [0.3, 0.3, 0.3, 0.3]],
                          dtype=torch.float64)
    ours = entropy_regularized_normalize(counts, tau)
    for row, theta in zip(counts.numpy(), ours.numpy()):
        reference = scipy_maximiser(row, tau)
        np.testing.assert_allclose(theta, reference, atol=5e-5)
        assert objective(theta, row, tau) >= objective(reference, row, tau) - 1e-9
    torch.testing.assert_close(ours.sum(-1), torch.ones(4, dtype=torch.float64))


def test_entropy_normalize_along_any_dim_and_limits():
    counts = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0)) * 10
    moved = entropy_regularized_normalize(counts, 2.0, dim=1)
    torch.testing.assert_close(moved, entropy_regularized_normalize(counts.transpose(1, 2), 2.0).transpose(1, 2))
    torch.testing.assert_close(entropy_regularized_normalize(counts, 1e-6), normalize(counts), atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy_regularized_normalize(counts, 1e9), torch.full_like(counts, 0.25))
    torch.testing.assert_close(entropy_regularized_normalize(torch.zeros(2, 3), 1.0), torch.full((2, 3), 1 / 3))


def test_m_step_with_entropy_smooths_then_regularises_then_interpolates():
    params = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], dtype=torch.float64)
    counts = torch.tensor([[4.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = m_step(params, counts, pseudocount=0.3, step_size=0.5, entropy_weight=1.5)
    for row in range(2):
        target = scipy_maximiser(counts[row].numpy() + 0.1, 1.5)
        np.testing.assert_allclose(out[row].numpy(), 0.5 * params[row].numpy() + 0.5 * target, atol=5e-5)
    unsmoothed = m_step(params, counts, step_size=0.5, entropy_weight=1.5)
    torch.testing.assert_close(unsmoothed[1], params[1])   # no evidence: unchanged, as without entropy


def test_zero_entropy_weight_is_exactly_todays_m_step():
    params = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), -1)
    counts = torch.rand(6, 5, generator=torch.Generator().manual_seed(2)) * 4
    counts[2] = 0
    out = m_step(params, counts, pseudocount=0.1, entropy_weight=0.0)
    torch.testing.assert_close(out, (counts + 0.02) / (counts + 0.02).sum(-1, keepdim=True))
    out = m_step(params, counts, entropy_weight=0.0)
    torch.testing.assert_close(out[[0, 1, 3, 4, 5]], counts[[0, 1, 3, 4, 5]] / counts[[0, 1, 3, 4, 5]].sum(-1, keepdim=True))
    assert torch.equal(out[2], params[2])
    grouped = apply_m_step({"w": ParameterGroup(params, 1)}, {"w": counts})["w"]
    assert torch.equal(grouped, out)


def test_apply_m_step_uses_each_groups_entropy_weight():
    params = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    counts = torch.tensor([[6.0, 1.0, 0.0], [0.0, 2.0, 2.0]], dtype=torch.float64)
    out = apply_m_step({"a": ParameterGroup(params, 1, entropy_weight=2.0), "b": ParameterGroup(params, 1)},
                       {"a": counts, "b": counts.clone()})
    torch.testing.assert_close(out["a"], entropy_regularized_normalize(counts, 2.0))
    torch.testing.assert_close(out["b"], counts / counts.sum(1, keepdim=True))


def test_bad_entropy_weights_are_refused():
    with pytest.raises(ValueError, match="entropy_weight"):
        ParameterGroup(torch.ones(2), 0, entropy_weight=-1.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        m_step(torch.ones(1, 2) / 2, torch.ones(1, 2), entropy_weight=-0.5)
    with pytest.raises(ValueError, match="non-negative"):
        entropy_regularized_normalize(torch.tensor([[1.0, -1.0]]), 1.0)
