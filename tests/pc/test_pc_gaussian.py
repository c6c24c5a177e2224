"""Gaussian input units: likelihood, flows, EM, queries and storage against independent computations."""
import math

import pytest
import torch

from hmmlvd import em, pc
from hmmlvd.pc.input_layers import GaussianInputGroup
from tests.pc.references import assert_cuda_matches_cpu, circuit_params, naive_log_likelihood


def mixed_gaussian_circuit():
    """Real x0 and x2, categorical x1 (3 categories); a two-level mixture with shared leaves."""
    g0, g2 = pc.gaussian_inputs(0, 3), pc.gaussian_inputs(2, 3)
    c1 = pc.inputs(1, 3, 3)
    pair = pc.summation(pc.multiply(g0, c1), 3)
    left = pc.multiply(pair, g2)
    right = pc.multiply(pc.gaussian_inputs(0, 2), pc.inputs(1, 2, 3), pc.gaussian_inputs(2, 2))
    return pc.summation([left, right], 1)


@pytest.fixture
def tiny():
    root = mixed_gaussian_circuit()
    circuit = pc.Circuit(root, seed=3, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(12, 3, generator=generator, dtype=torch.float64) * 1.5
    data[:, 1] = torch.randint(0, 3, (12,), generator=generator).double()
    data[0, 0] = data[1, 1] = data[2, 2] = float("nan")
    data[3] = float("nan")
    return root, circuit, data


def test_likelihood_matches_unit_by_unit_reference(tiny):
    root, circuit, data = tiny
    params = circuit_params(circuit, root)
    expected = torch.stack([naive_log_likelihood(root, row, params) for row in data.tolist()])
    torch.testing.assert_close(circuit.log_likelihood(data), expected, rtol=0, atol=1e-12)
    assert circuit.log_likelihood(data)[3].item() == pytest.approx(0.0, abs=1e-12)


def test_density_integrates_to_one(tiny):
    _, circuit, _ = tiny
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    x0, x2 = torch.meshgrid(grid, grid, indexing="ij")
    total = 0.0
    for category in range(3):
        points = torch.stack([x0.reshape(-1), torch.full((grid.numel() ** 2,), float(category),
                                                         dtype=torch.float64), x2.reshape(-1)], dim=1)
        density = circuit.log_likelihood(points).exp().reshape(len(grid), len(grid))
        total += torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item()
    assert total == pytest.approx(1.0, abs=1e-6)


def test_sufficient_statistics_equal_reference_flows(tiny):
    root, circuit, data = tiny
    params = circuit_params(circuit, root)
    gaussians = [node for node in pc.topological_order(root) if isinstance(node, pc.GaussianInputNodes)]
    expected = {node: torch.zeros(node.num_units, 3, dtype=torch.float64) for node in gaussians}
    for row in data.tolist():
        offsets = {node: torch.zeros(node.num_units, dtype=torch.float64, requires_grad=True)
                   for node in gaussians}
        naive_log_likelihood(root, row, params, offsets).backward()
        for node in gaussians:
            value = row[node.variable]
            if not math.isnan(value):
                flows = offsets[node].grad
                expected[node] += torch.stack([flows, flows * value, flows * value ** 2], dim=1)
    counts = circuit.expected_counts(data)
    (name, group), = [(n, g) for n, g in circuit._named_groups.items() if isinstance(g, GaussianInputGroup)]
    offset = 0
    for node in group.nodes:
        torch.testing.assert_close(counts[name][offset:offset + node.num_units], expected[node],
                                   rtol=1e-9, atol=1e-10)
        offset += node.num_units


def two_cluster_data(num_examples: int = 600) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    cluster = torch.rand(num_examples, generator=generator) < 0.3
    centres = torch.where(cluster[:, None], torch.tensor([-3.0, 4.0]), torch.tensor([2.0, -1.0]))
    return (centres + 0.5 * torch.randn(num_examples, 2, generator=generator)).double()


def test_full_batch_em_is_monotone_and_recovers_the_clusters():
    root = pc.summation(pc.multiply(pc.gaussian_inputs(0, 2), pc.gaussian_inputs(1, 2)), 1)
    circuit = pc.Circuit(root, seed=0, dtype=torch.float64)
    data = two_cluster_data()
    history = em.fit(circuit, data, em.Constant(1.0, 30), full_batch=True, progress=False)
    lls = history.train_log_likelihood
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:])), lls
    means = torch.stack([circuit.node_parameters(child)[:, 0] for child in root.children[0].children], dim=1)
    weights = circuit.node_parameters(root)[0]
    order = means[:, 0].argsort()
    torch.testing.assert_close(means[order], torch.tensor([[-3.0, 4.0], [2.0, -1.0]], dtype=torch.float64),
                               atol=0.15, rtol=0)
    torch.testing.assert_close(weights[order], torch.tensor([0.3, 0.7], dtype=torch.float64), atol=0.05, rtol=0)


def test_mini_batch_em_improves_a_gaussian_circuit():
    root = pc.summation(pc.multiply(pc.gaussian_inputs(0, 4), pc.gaussian_inputs(1, 4)), 1)
    circuit = pc.Circuit(root, seed=1, dtype=torch.float64)
    data = two_cluster_data()
    before = circuit.log_likelihood(data).mean().item()
    em.fit(circuit, data, em.LinearAnneal(0.5, 0.1, 5), batch_size=64, progress=False)
    assert circuit.log_likelihood(data).mean().item() > before + 1.0


def test_sampling_and_mpe_fill_missing_values():
    params = torch.tensor([[-2.0, 0.5], [3.0, 1.0]], dtype=torch.float64)
    root = pc.summation(pc.multiply(pc.gaussian_inputs(0, 2, params), pc.inputs(1, 2, 2, torch.eye(2))), 1,
                        params=torch.tensor([[0.25, 0.75]]))
    circuit = pc.Circuit(root, dtype=torch.float64)
    samples = pc.sample(circuit, 20000, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.float64
    mean = 0.25 * -2.0 + 0.75 * 3.0
    second = 0.25 * (0.25 + 4.0) + 0.75 * (1.0 + 9.0)
    assert samples[:, 0].mean().item() == pytest.approx(mean, abs=0.05)
    assert samples[:, 0].var().item() == pytest.approx(second - mean ** 2, rel=0.03)
    assert (samples[:, 1] == (samples[:, 0] > 0.5).double()).double().mean().item() > 0.99
    evidence = torch.tensor([[float("nan"), 0.0], [float("nan"), 1.0], [2.9, float("nan")]], dtype=torch.float64)
    assignment, _ = pc.max_product_assignment(circuit, evidence)
    torch.testing.assert_close(assignment, torch.tensor([[-2.0, 0.0], [3.0, 1.0], [2.9, 1.0]], dtype=torch.float64))
    conditional = pc.sample(circuit, evidence=evidence, generator=torch.Generator().manual_seed(1))
    assert conditional[2, 0].item() == 2.9 and conditional[2, 1].item() == 1.0
    assert conditional[0, 0].item() < 0 < conditional[1, 0].item()


def test_save_and_load_round_trip(tmp_path, tiny):
    _, circuit, data = tiny
    circuit.save_pretrained(tmp_path / "model")
    loaded = pc.Circuit.from_pretrained(tmp_path / "model", dtype=torch.float64)
    torch.testing.assert_close(loaded.log_likelihood(data), circuit.log_likelihood(data), rtol=0, atol=1e-12)


def test_bad_gaussian_inputs_raise_clear_errors(tiny):
    _, circuit, data = tiny
    with pytest.raises(ValueError, match="positive standard deviations"):
        pc.gaussian_inputs(0, 2, torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="min_std"):
        pc.gaussian_inputs(0, 2, min_std=0)
    with pytest.raises(ValueError, match="float tensor"):
        circuit.log_likelihood(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="whole-number"):
        circuit.log_likelihood(torch.tensor([[0.0, 0.5, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="categorical inputs only"):
        circuit.log_likelihood(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="no categorical variables"):
        pc.conditional_marginals(pc.Circuit(pc.summation(pc.gaussian_inputs(0, 2), 1)), data[:, :1])
    with pytest.raises(ValueError, match="no Gaussian inputs"):
        pc.conditional_moments(pc.Circuit(pc.summation(pc.inputs(0, 2), 1)), torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="one kind of input"):
        pc.Circuit(pc.summation([pc.gaussian_inputs(0, 2), pc.inputs(0, 2)], 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny):
    root, _, data = tiny
    gpu = assert_cuda_matches_cpu(root, data)
    samples = pc.sample(gpu, 16, generator=torch.Generator().manual_seed(0))
    assert samples.device.type == "cuda" and not torch.isnan(samples).any()


def test_materialised_gaussian_mixture_marginalises_and_trains_on_x_and_z():
    root = pc.summation(pc.multiply(pc.gaussian_inputs(0, 3), pc.gaussian_inputs(1, 3)), 1)
    circuit = pc.Circuit(root, seed=2, dtype=torch.float64)
    circuit.update_nodes()                      # materialise the compiled (random) parameters, not new ones
    result = pc.materialize(root, [root.scope])
    joint = pc.Circuit(result.root, dtype=torch.float64)
    data = two_cluster_data(50)
    marginal = joint.log_likelihood(result.augment(data, torch.full((50, 1), -1)))
    torch.testing.assert_close(marginal, circuit.log_likelihood(data), rtol=0, atol=1e-12)
    z = (data[:, 0] < 0).long()[:, None]                       # complete the latent from the data
    history = em.fit(joint, result.augment(data, z), em.Constant(1.0, 3), full_batch=True, progress=False)
    assert history.train_log_likelihood[-1] >= history.train_log_likelihood[0]


def test_conditional_moments_and_marginals_match_numerical_integration(tiny):
    _, circuit, _ = tiny
    evidence = torch.tensor([[float("nan"), 2.0, 0.7], [1.5, float("nan"), float("nan")]], dtype=torch.float64)
    mean, variance = pc.conditional_moments(circuit, evidence)
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    points = torch.stack([grid, torch.full_like(grid, 2.0), torch.full_like(grid, 0.7)], dim=1)
    density = circuit.log_likelihood(points).exp()
    mass = torch.trapezoid(density, grid)
    expected_mean = torch.trapezoid(density * grid, grid) / mass
    expected_variance = torch.trapezoid(density * (grid - expected_mean) ** 2, grid) / mass
    assert mean[0, 0].item() == pytest.approx(expected_mean.item(), abs=1e-7)
    assert variance[0, 0].item() == pytest.approx(expected_variance.item(), abs=1e-7)
    assert mean[0, 2].item() == 0.7 and variance[0, 2].item() == 0.0 and torch.isnan(mean[:, 1]).all()
    # the categorical x1 given x0 = 1.5 (x2 marginalised): p(x1 = c | x0) by brute force over c
    marginals = pc.conditional_marginals(circuit, evidence)
    joint = torch.stack([circuit.log_likelihood(torch.tensor([[1.5, float(c), float("nan")]],
                                                             dtype=torch.float64)) for c in range(3)]).exp()[:, 0]
    torch.testing.assert_close(marginals[1, 1], joint / joint.sum(), rtol=0, atol=1e-12)
    assert marginals[:, 0].abs().sum() == 0 and marginals[0, 1].tolist() == [0.0, 0.0, 1.0]
