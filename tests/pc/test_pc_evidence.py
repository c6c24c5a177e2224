"""Soft evidence and data softening, against brute-force sums over every assignment (float64)."""
import pytest
import torch

from hmmlvd import em, pc
from tests.pc.references import (all_assignments, assert_cuda_matches_cpu, circuit_params, mixed_circuit,
                               naive_log_likelihood)


def brute_force_soft(root, params: dict, soft: torch.Tensor) -> torch.Tensor:
    """log Σ_x Π_v soft[b, v, x_v] · p(x) per example, enumerating all 3^3 assignments."""
    everything = all_assignments([3, 3, 3])
    log_joint = torch.stack([naive_log_likelihood(root, row, params) for row in everything.tolist()])
    log_weights = soft.log()[:, torch.arange(3), everything].sum(-1)         # [B, 27]
    return torch.logsumexp(log_weights + log_joint, dim=1)


@pytest.fixture
def tiny():
    root = mixed_circuit()
    circuit = pc.Circuit(root, seed=2, dtype=torch.float64)
    soft = torch.rand(6, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.01
    soft[0, 1] = 1.0                                     # a marginalised variable
    return root, circuit, soft


def test_soft_likelihood_equals_brute_force(tiny):
    root, circuit, soft = tiny
    expected = brute_force_soft(root, circuit_params(circuit, root), soft)
    torch.testing.assert_close(circuit.log_likelihood(soft), expected, rtol=0, atol=1e-12)


def test_soft_counts_equal_autograd(tiny):
    root, circuit, soft = tiny
    params = circuit_params(circuit, root, requires_grad=True)
    brute_force_soft(root, params, soft).sum().backward()
    counts = circuit.expected_counts(soft)
    for name, group in circuit._named_groups.items():
        for index, node in enumerate(group.nodes):
            if name.startswith("sum"):
                got = counts[name][index]
            else:
                offset = sum(n.num_units for n in group.nodes[:index])
                got = counts[name][offset:offset + node.num_units]
            expected = params[node] * params[node].grad
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


def test_hard_data_as_soft_evidence_changes_nothing():
    circuit = pc.Circuit(mixed_circuit(), seed=5, dtype=torch.float64)
    data = all_assignments([3, 3, 3])[::2].clone()
    data[::3, 1] = -1
    soft = pc.soften(data, 0.0, num_categories=3).double()
    torch.testing.assert_close(circuit.log_likelihood(soft), circuit.log_likelihood(data), rtol=0, atol=1e-12)
    complete = (data >= 0).all(1)       # (missing hard values add no input counts; a row of ones spreads them)
    hard, softened = circuit.expected_counts(data[complete]), circuit.expected_counts(soft[complete])
    for name in hard:
        torch.testing.assert_close(softened[name], hard[name], rtol=1e-10, atol=1e-12)


def test_soften_moves_weight_towards_the_marginals():
    data = torch.tensor([[0, 1], [1, -1], [1, 1]])
    marginals = pc.empirical_marginals(data, alpha=0.0)
    torch.testing.assert_close(marginals, torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]]))
    soft = pc.soften(data, 0.3, marginals=marginals)
    torch.testing.assert_close(soft[0, 0], torch.tensor([0.7 + 0.1, 0.2]))
    torch.testing.assert_close(soft[1, 1], torch.ones(2))                # missing: a row of ones
    torch.testing.assert_close(pc.soften(data, 0.2)[0, 1], torch.tensor([0.1, 0.9]))


def test_full_batch_em_on_soft_evidence_never_decreases_its_likelihood():
    circuit = pc.Circuit(mixed_circuit(), seed=1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    data = torch.randint(0, 3, (200, 3), generator=generator)
    data[:, 2] = data[:, 0]
    soft = pc.soften(data, 0.05, num_categories=3).double()
    history = em.fit(circuit, soft, em.Constant(1.0, 8), full_batch=True, pseudocount=0.0, progress=False)
    lls = history.train_log_likelihood
    assert all(b >= a - 1e-10 for a, b in zip(lls, lls[1:])), lls
    assert lls[-1] > lls[0] + 0.05


def test_bad_soft_evidence_is_rejected():
    circuit = pc.Circuit(mixed_circuit(), seed=1)
    with pytest.raises(ValueError, match="K >= 3"):
        circuit.log_likelihood(torch.ones(2, 3, 2))
    with pytest.raises(ValueError, match="non-negative"):
        circuit.log_likelihood(-torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="hard evidence"):
        pc.sample(circuit, evidence=torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="hard evidence"):
        pc.max_product_assignment(circuit, torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="strength"):
        pc.soften(torch.zeros(2, 2, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="category ids"):
        pc.soften(torch.full((2, 2), 2), 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_soft_evidence_matches_cpu(tiny):
    root, _, soft = tiny
    assert_cuda_matches_cpu(root, soft)
