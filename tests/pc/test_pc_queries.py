"""Conditional marginals, sampling frequencies and max-product against brute-force enumeration."""
import itertools
import math

import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc.queries import conditional_marginals, max_product_assignment, sample
from hmmlvd.pc.structures import hmm_circuit, rat_spn
from tests.pc.references import all_assignments
from tests.pc.test_pc_circuit import mixed_circuit


@pytest.fixture(scope="module")
def circuit():
    return pc.Circuit(mixed_circuit(), seed=5, dtype=torch.float64)


def brute_joint(circuit):
    everything = all_assignments([3] * circuit.num_variables)
    return everything, circuit.log_likelihood(everything).exp()


def test_conditional_marginals_match_enumeration(circuit):
    everything, joint = brute_joint(circuit)
    evidence = torch.tensor([[-1, 2, -1], [0, -1, -1], [-1, -1, -1], [1, 0, 2]])
    got = conditional_marginals(circuit, evidence)
    for b, row in enumerate(evidence.tolist()):
        consistent = torch.ones(len(everything), dtype=torch.bool)
        for variable, value in enumerate(row):
            if value >= 0:
                consistent &= everything[:, variable] == value
        posterior = joint * consistent
        posterior = posterior / posterior.sum()
        for variable in range(3):
            expected = torch.stack([posterior[everything[:, variable] == c].sum() for c in range(3)])
            torch.testing.assert_close(got[b, variable], expected, rtol=1e-9, atol=1e-12)


def test_sampling_frequencies_match_the_distribution(circuit):
    everything, joint = brute_joint(circuit)
    samples = sample(circuit, 40000, generator=torch.Generator().manual_seed(0))
    codes = (samples * torch.tensor([9, 3, 1])).sum(1)
    frequencies = torch.bincount(codes, minlength=27).double() / len(samples)
    # 40k samples: binomial standard error <= 0.0025 per cell; allow 5 sigma
    torch.testing.assert_close(frequencies, joint, rtol=0, atol=0.0125)


def test_conditional_sampling_keeps_evidence_and_follows_the_posterior(circuit):
    everything, joint = brute_joint(circuit)
    evidence = torch.tensor([[-1, 1, -1]]).repeat(30000, 1)
    samples = sample(circuit, evidence=evidence, generator=torch.Generator().manual_seed(1))
    assert (samples[:, 1] == 1).all()
    posterior = joint * (everything[:, 1] == 1)
    posterior = posterior / posterior.sum()
    codes = (samples * torch.tensor([9, 3, 1])).sum(1)
    frequencies = torch.bincount(codes, minlength=27).double() / len(samples)
    torch.testing.assert_close(frequencies, posterior, rtol=0, atol=0.015)
    with pytest.raises(ValueError, match="exactly one"):
        sample(circuit)


def test_max_product_on_an_hmm_circuit_is_viterbi():
    generator = torch.Generator().manual_seed(3)
    states, vocab, length = 2, 3, 4

    def distributions(*shape):
        values = torch.rand(*shape, generator=generator, dtype=torch.float64) + 0.1
        return values / values.sum(-1, keepdim=True)

    initial, transitions = distributions(states), distributions(length - 1, states, states)
    emissions = distributions(length, states, vocab).transpose(1, 2)          # [T, V, h]
    structure = hmm_circuit(initial, transitions, emissions)
    circuit = pc.Circuit(structure.root, dtype=torch.float64)
    evidence = torch.tensor([[-1, 2, -1, 0], [1, 1, 1, 1], [-1, -1, -1, -1]])
    assignment, score = max_product_assignment(circuit, evidence)
    for b, row in enumerate(evidence.tolist()):
        best, best_x = -math.inf, None
        for x in itertools.product(range(vocab), repeat=length):
            if any(r >= 0 and r != v for r, v in zip(row, x)):
                continue
            for z in itertools.product(range(states), repeat=length):
                joint = math.log(initial[z[0]]) + sum(math.log(emissions[t, x[t], z[t]]) for t in range(length))
                joint += sum(math.log(transitions[t, z[t], z[t + 1]]) for t in range(length - 1))
                if joint > best:
                    best, best_x = joint, x
        assert score[b].item() == pytest.approx(best, abs=1e-10)
        assert tuple(assignment[b].tolist()) == best_x


def test_max_product_completes_only_missing_entries():
    circuit = pc.Circuit(rat_spn(5, 3, depth=2, num_repetitions=2, num_sums=3, num_input_units=2), seed=2)
    evidence = torch.tensor([[0, -1, 2, -1, 1]])
    assignment, _ = max_product_assignment(circuit, evidence)
    assert assignment[0, [0, 2, 4]].tolist() == [0, 2, 1]
    assert ((assignment >= 0) & (assignment < 3)).all()
