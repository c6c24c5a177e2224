"""HCLT (mutual information, Chow-Liu tree), RAT-SPN and the HMM as a circuit."""
import itertools
import math

import numpy as np
import pytest
import torch

from hmmlvd import HMM, HMMConfig, em, pc
from hmmlvd.pc.structures import chow_liu_tree, hclt, hmm_circuit, mutual_information, rat_spn
from tests.pc.references import all_assignments


def correlated_data(num_examples=400, num_vars=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    data = torch.zeros(num_examples, num_vars, dtype=torch.long)
    data[:, 0] = (torch.rand(num_examples, generator=generator) < 0.4).long()
    for v in range(1, num_vars):
        flip = (torch.rand(num_examples, generator=generator) < 0.1 + 0.08 * v).long()
        data[:, v] = data[:, (v * 3) % v if v > 1 else 0] ^ flip
    return data


def test_mutual_information_matches_direct_formula():
    data = correlated_data()
    alpha = 0.01
    got = mutual_information(data, 2, alpha=alpha)
    for a, b in itertools.combinations(range(data.shape[1]), 2):
        table = np.full((2, 2), alpha)
        for x, y in zip(data[:, a].tolist(), data[:, b].tolist()):
            table[x, y] += 1
        joint = table / table.sum()
        expected = sum(joint[i, j] * math.log(joint[i, j] / joint[i].sum() / joint[:, j].sum())
                       for i in range(2) for j in range(2))
        assert got[a, b] == pytest.approx(expected, rel=1e-9)
        assert got[b, a] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("block_bytes", [1, 5 * 11 * 64 * 8, 1 << 26])       # one variable, five, all at once
def test_mutual_information_in_blocks_is_the_same_to_the_bit(block_bytes):
    """The joint counts are built a block of variables at a time (memory linear in V); every block size gives the
    numbers of one block holding all variables, bit for bit, and the direct formula's (binned pixels)."""
    data = torch.randint(0, 256, (300, 11), generator=torch.Generator().manual_seed(3))
    data[:, 5] = data[:, 2] // 2 + data[:, 7] // 2                              # some dependence
    whole = mutual_information(data, 256, num_bins=8, block_bytes=1 << 40)
    got = mutual_information(data, 256, num_bins=8, block_bytes=block_bytes, chunk_size=128)
    assert np.array_equal(got, whole)
    binned = (data * 8 // 256).numpy()
    table = np.full((8, 8), 0.01)
    np.add.at(table, (binned[:, 2], binned[:, 5]), 1.0)
    joint = table / table.sum()
    expected = float((joint * np.log(joint / joint.sum(1, keepdims=True) / joint.sum(0, keepdims=True))).sum())
    assert got[2, 5] == pytest.approx(expected, rel=1e-9) and got[2, 5] > got[2, 9]


def test_chow_liu_tree_is_the_maximum_spanning_tree():
    information = mutual_information(correlated_data(seed=1), 2)
    parents, children, order = chow_liu_tree(information)
    weight = sum(information[v, p] for v, p in enumerate(parents) if p >= 0)
    num_vars = information.shape[0]
    best = -1.0
    for prufer in itertools.product(range(num_vars), repeat=num_vars - 2):  # every labelled tree
        degree = [1] * num_vars
        for v in prufer:
            degree[v] += 1
        edges, sequence = [], list(prufer)
        for v in sequence:
            leaf = min(u for u in range(num_vars) if degree[u] == 1)
            edges.append((leaf, v))
            degree[leaf] -= 1
            degree[v] -= 1
        u, w = [x for x in range(num_vars) if degree[x] == 1]
        edges.append((u, w))
        best = max(best, sum(information[a, b] for a, b in edges))
    assert weight == pytest.approx(best, rel=1e-12)
    assert sorted(order) == list(range(num_vars)) and parents[order[0]] == -1
    assert all(order.index(p) < order.index(v) for v, p in enumerate(parents) if p >= 0)


def test_hclt_is_a_normalised_tree_circuit_that_learns():
    data = correlated_data()
    root = hclt(data, num_latents=3)
    circuit = pc.Circuit(root, dtype=torch.float64)
    assert circuit.log_likelihood(all_assignments([2] * 5)).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    sums = [n for n in pc.topological_order(root) if isinstance(n, pc.SumNodes)]
    assert len(sums) == 5 and root.scope == frozenset(range(5))
    before = circuit.log_likelihood(data).mean().item()
    em.fit(circuit, data, em.Constant(1.0, 5), full_batch=True, progress=False)
    assert circuit.log_likelihood(data).mean().item() > before + 0.05
    with pytest.raises(ValueError, match="complete category ids"):
        hclt(torch.tensor([[0, -1], [1, 1]]), 2)


def test_hclt_mixture_of_bootstrap_trees_is_normalised():
    root = hclt(correlated_data(seed=2), num_latents=2, num_trees=3, seed=1)
    assert len(root.children) == 3 and all(child.scope == frozenset(range(5)) for child in root.children)
    circuit = pc.Circuit(root, dtype=torch.float64)
    assert circuit.log_likelihood(all_assignments([2] * 5)).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="num_trees"):
        hclt(correlated_data(), 2, num_trees=0)


def test_rat_spn_is_normalised_and_covers_all_variables():
    root = rat_spn(7, 2, depth=2, num_repetitions=3, num_sums=2, num_input_units=2, seed=1)
    assert root.scope == frozenset(range(7))
    circuit = pc.Circuit(root, dtype=torch.float64)
    assert circuit.log_likelihood(all_assignments([2] * 7)).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="depth"):
        rat_spn(4, depth=0)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_hmm_as_a_circuit_equals_the_hmm(dtype, tolerance):
    """Same log-likelihoods and the same EM update (pseudocount 0.1, η = 0.5) as hmmlvd.HMM."""
    config = HMMConfig(num_states=4, vocab_size=5, seq_len=6)
    hmm = HMM.random(config, seed=3, dtype=dtype)
    structure = hmm_circuit(hmm.initial, hmm.transitions, hmm.emissions)
    circuit = pc.Circuit(structure.root, dtype=dtype)
    tokens = torch.randint(0, 5, (64, 6), generator=torch.Generator().manual_seed(0))
    tokens[::5, 2] = -1
    tokens[1, :3] = -1
    torch.testing.assert_close(circuit.log_likelihood(tokens).double(), hmm.log_likelihood(tokens).double(),
                               rtol=0, atol=tolerance * 10)
    for model in (hmm, circuit):
        em.fit(model, tokens, em.Constant(0.5, 1), full_batch=True, pseudocount=0.1, progress=False)
    initial, transitions, emissions = structure.hmm_parameters(circuit)
    torch.testing.assert_close(initial, hmm.initial, rtol=0, atol=tolerance)
    torch.testing.assert_close(transitions, hmm.transitions, rtol=0, atol=tolerance)
    torch.testing.assert_close(emissions, hmm.emissions, rtol=0, atol=tolerance)


def test_hmm_circuit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="transition tables"):
        hmm_circuit(torch.ones(2) / 2, torch.ones(1, 2, 2) / 2, torch.ones(3, 4, 2) / 4)
