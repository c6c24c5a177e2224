"""Latent materialisation: the materialised circuit marginalises to the original; LVD training path."""
import pytest
import torch

from hmmlvd import em, pc
from hmmlvd.pc.materialize import materialize
from hmmlvd.pc.structures import hclt, hmm_circuit
from tests.pc.references import all_assignments
from tests.pc.test_pc_structures import correlated_data


@pytest.fixture
def hclt_and_scopes():
    data = correlated_data()
    root = hclt(data, num_latents=3)
    circuit = pc.Circuit(root, seed=2, dtype=torch.float64)
    circuit.update_nodes()
    scopes = [n.scope for n in pc.topological_order(root) if isinstance(n, pc.SumNodes) and n is not root][:2]
    return data, root, circuit, scopes


def test_materialised_circuit_marginalises_to_the_original(hclt_and_scopes):
    data, root, circuit, scopes = hclt_and_scopes
    result = materialize(root, scopes)
    joint = pc.Circuit(result.root, dtype=torch.float64)
    assert result.latent_variables == [5, 6] and result.latent_sizes == [3, 3]
    everything = all_assignments([2] * 5 + [3, 3])
    joint_p = joint.log_likelihood(everything).exp().reshape(32, 9).sum(1)
    torch.testing.assert_close(joint_p, circuit.log_likelihood(all_assignments([2] * 5)).exp(), rtol=1e-12, atol=0)
    hidden = result.augment(data[:20], torch.full((20, 2), -1))
    torch.testing.assert_close(joint.log_likelihood(hidden), circuit.log_likelihood(data[:20]), rtol=0, atol=1e-12)
    assert joint.log_likelihood(everything).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_materialised_hmm_latents_are_the_hidden_states():
    initial = torch.tensor([0.3, 0.7], dtype=torch.float64)
    transitions = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]], dtype=torch.float64)
    emissions = torch.tensor([[[0.6, 0.1], [0.4, 0.9]], [[0.5, 0.3], [0.5, 0.7]]], dtype=torch.float64)
    structure = hmm_circuit(initial, transitions, emissions)
    result = materialize(structure.root, [frozenset({0, 1}), frozenset({1})])
    joint = pc.Circuit(result.root, dtype=torch.float64)
    x, z = torch.tensor([[1, 0]]), torch.tensor([[1, 0]])       # z_0 = 1, z_1 = 0
    expected = initial[1] * emissions[0, 1, 1] * transitions[0, 1, 0] * emissions[1, 0, 0]
    assert joint.log_likelihood(result.augment(x, z)).exp().item() == pytest.approx(expected.item(), rel=1e-12)


def test_lvd_training_on_x_and_z_then_on_x(hclt_and_scopes):
    data, root, circuit, scopes = hclt_and_scopes
    result = materialize(root, scopes)
    joint = pc.Circuit(result.root, dtype=torch.float64)
    z = torch.stack([data[:, 1] * 2, data[:, 3] + data[:, 4]], dim=1)        # any supervised assignment
    augmented = result.augment(data, z)
    before = joint.log_likelihood(augmented).mean().item()
    em.fit(joint, augmented, em.Constant(1.0, 3), full_batch=True, progress=False)
    after_lower_bound = joint.log_likelihood(augmented).mean().item()
    assert after_lower_bound > before
    with pytest.raises(ValueError, match="not compiled from this"):
        result.copy_to_original(pc.Circuit(root))
    result.copy_to_original(joint)
    distilled = pc.Circuit(root, dtype=torch.float64)
    assert distilled.log_likelihood(data).mean().item() >= after_lower_bound - 1e-9     # p(x) >= p(x, z)
    history = em.fit(distilled, data, em.Constant(1.0, 3), full_batch=True, pseudocount=0.0, progress=False)
    assert history.train_log_likelihood[-1] >= history.train_log_likelihood[0] - 1e-10


def test_materialise_rejects_unknown_scopes(hclt_and_scopes):
    _, root, _, _ = hclt_and_scopes
    with pytest.raises(ValueError, match="no sum node has scope"):
        materialize(root, [{0, 4}])
    with pytest.raises(ValueError, match="distinct"):
        materialize(root, [{0}, {0}])
