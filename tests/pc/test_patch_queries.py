"""Patch-circuit marginals and MPE (pc.conditional_marginals / pc.max_product_assignment) against brute force over
every completion and every latent choice, and against the same circuit built from pc nodes."""
import itertools

import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc.tree_pass import argmax_states, max_upward, plan_tree
from tests.pc.patch_reference import all_patches, children_of, node_circuit, transition_row
from tests.pc.test_patch_circuit import data_with_gaps, small

# (P, D, value_parents, latent_parents): a branching patch tree, then a branching latent tree; neither rooted at 0
SHAPES = [(2, 3, (1, -1, 1), (1, -1)), (3, 2, (1, -1), (1, -1, 1))]


def tiny(tied, shape, **options):
    patches, values, value_parents, latent_parents = shape
    config = pc.PatchCircuitConfig(num_patches=patches, values_per_patch=values, num_clusters=2, hidden_size=2,
                                   latent_hidden_size=2, num_categories=2, tied=tied, value_parents=value_parents,
                                   latent_parents=latent_parents)
    return pc.PatchCircuit(config, seed=7, dtype=torch.float64, **options)


def evidence_rows(config):
    """Scattered gaps over two patches, a whole patch missing, fully observed, fully missing."""
    x = torch.randint(0, 2, (5, config.num_patches, config.values_per_patch),
                      generator=torch.Generator().manual_seed(1))
    x[0, 0, 0] = x[0, 1, 1] = x[0, -1, -1] = -1
    x[1, 1] = -1
    x[3] = -1
    x[4, 0, 1:] = -1
    return x


def consistent(everything, row):
    observed = row >= 0
    return ((everything == row) | ~observed).flatten(1).all(1)


def tree_log(parents, states, root_table, transition_table):
    """log p(states) of a tree: ``states`` [N, nodes], ``root_table(h)`` and ``transition_table(row, hp, hc)``."""
    root = list(parents).index(-1)
    total = root_table(states[:, root])
    for node, parent in enumerate(parents):
        if parent >= 0:
            total = total + transition_table(transition_row(parents, node), states[:, parent], states[:, node])
    return total


def all_joints(circuit):
    """log p(x, u, z, h) [K^(P·D), Ht^P · k^P · H^(P·D)] for every input x and every latent choice: u the latent
    HCLT's states, z the clusters, h every patch tree's states (the tree of cluster z_i for patch i)."""
    config, logs = circuit.config, {name: t.log() for name, t in circuit.parameters.items()}
    patches, values = config.num_patches, config.values_per_patch
    grid = [config.latent_hidden_size] * patches + [config.num_clusters] * patches + [config.hidden_size] * (
        patches * values)
    latents = torch.tensor(list(itertools.product(*[range(n) for n in grid])))
    u, z, h = latents[:, :patches], latents[:, patches:2 * patches], latents[:, 2 * patches:].view(-1, patches, values)
    score = tree_log(config.latent_parents, u, lambda s: logs["latent_root"][0, s],
                     lambda r, a, b: logs["latent_transitions"][0, r, a, b])
    everything = all_patches(config)
    emission = torch.zeros(len(everything), len(latents), dtype=torch.float64)
    for i in range(patches):
        stack = 0 if config.tied else i
        score = score + logs["latent_emissions"][i, u[:, i], z[:, i]]
        score = score + tree_log(config.value_parents, h[:, i], lambda s: logs["patch_root"][stack, z[:, i], s],
                                 lambda r, a, b: logs["patch_transitions"][stack, z[:, i], r, a, b])
        for j in range(values):
            emission += logs["patch_emissions"][stack, z[None, :, i], j, everything[:, None, i, j], h[None, :, i, j]]
    return everything, score[None] + emission


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_conditional_marginals_match_enumeration(tied, shape):
    circuit = tiny(tied, shape)
    everything = all_patches(circuit.config)
    joint = circuit.log_likelihood(everything).exp()
    x = evidence_rows(circuit.config)
    got = pc.conditional_marginals(circuit, x)
    assert got.shape == (*x.shape, 2) and got.dtype == torch.float64
    for b in range(len(x)):
        posterior = joint * consistent(everything, x[b])
        posterior = posterior / posterior.sum()
        expected = torch.stack([torch.stack([posterior[everything[:, i, j] == v].sum() for v in range(2)])
                                for i in range(x.shape[1]) for j in range(x.shape[2])]).view_as(got[b])
        torch.testing.assert_close(got[b], expected, rtol=0, atol=1e-13)
    observed = x >= 0                                   # one-hot rows where observed, a distribution everywhere
    assert (got[observed].max(1).values == 1).all() and (got[observed].argmax(1) == x[observed]).all()
    torch.testing.assert_close(got.sum(-1), torch.ones(x.shape, dtype=torch.float64), rtol=0, atol=1e-13)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_max_product_assignment_matches_enumeration(tied, shape):
    circuit = tiny(tied, shape)
    everything, joints = all_joints(circuit)
    # the enumeration is a distribution over (x, latents): it sums to 1 and marginalises to log_likelihood
    torch.testing.assert_close(torch.logsumexp(joints, 1), circuit.log_likelihood(everything), rtol=0, atol=1e-12)
    x = evidence_rows(circuit.config)
    assignment, score = pc.max_product_assignment(circuit, x)
    assert assignment.shape == x.shape and assignment.dtype == torch.long and score.shape == (len(x),)
    for b in range(len(x)):
        best = joints.masked_fill(~consistent(everything, x[b])[:, None], -torch.inf).amax(1)   # [K^(P·D)]
        assert score[b].item() == pytest.approx(best.max().item(), abs=1e-12)
        assert torch.equal(assignment[b], everything[best.argmax()])
    observed = x >= 0
    assert torch.equal(assignment[observed], x[observed])
    assert bool((score <= circuit.log_likelihood(x) + 1e-12).all())


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk_elements", [1 << 24, 40])
def test_queries_match_node_circuit(tied, chunk_elements):
    # the same circuit built from pc nodes and queried by pc.Circuit's own passes, on branching trees with k = 3,
    # H = 2, K = 3; chunk_elements 40: one example a chunk in both queries, so the fully observed rows 3 and 5 take the
    # marginals' one-hot shortcut alone
    circuit = small(tied, chunk_elements=chunk_elements)
    x = data_with_gaps(circuit)
    x[4, 2, :2] = -1
    flat, reference = x.reshape(len(x), -1), node_circuit(circuit)
    got = pc.conditional_marginals(circuit, x)
    torch.testing.assert_close(got, pc.conditional_marginals(reference, flat).view_as(got), rtol=0, atol=1e-12)
    assignment, score = pc.max_product_assignment(circuit, x)
    expected, expected_score = pc.max_product_assignment(reference, flat)
    assert torch.equal(assignment.reshape(len(x), -1), expected)
    torch.testing.assert_close(score, expected_score, rtol=0, atol=1e-12)


def test_max_pass_over_trees_matches_enumeration():
    parents, groups, hidden, columns = (2, 2, -1, 0, 2), 2, 3, 4
    generator = torch.Generator().manual_seed(4)
    leaf = torch.randn(groups, len(parents), columns, hidden, generator=generator, dtype=torch.float64)
    transitions = torch.rand(groups, len(parents) - 1, hidden, hidden, generator=generator, dtype=torch.float64)
    root = torch.rand(groups, hidden, generator=generator, dtype=torch.float64)
    plan = plan_tree(parents)
    values, best = max_upward(plan, leaf.clone(), transitions, root)
    states = argmax_states(plan, values, transitions, root)
    assert len(children_of(parents)[2]) == 3                    # branching, and two levels deep
    every = torch.tensor(list(itertools.product(range(hidden), repeat=len(parents))))        # [H^D, D]
    for g in range(groups):
        prior = tree_log(parents, every, lambda s: root[g, s].log(), lambda r, a, b: transitions[g, r, a, b].log())
        scores = prior[:, None] + sum(leaf[g, v][:, every[:, v]].T for v in range(len(parents)))  # [H^D, M]
        torch.testing.assert_close(best[g], scores.amax(0), rtol=0, atol=1e-12)
        assert torch.equal(states[g].T, every[scores.argmax(0)])


def test_float32_agrees_and_queries_leave_the_circuit_alone():
    reference = small(False)
    circuit = pc.PatchCircuit(reference.config, seed=5)
    before = {name: values.clone() for name, values in circuit.parameters.items()}
    x = data_with_gaps(circuit)
    marginals = pc.conditional_marginals(circuit, x)
    assignment, score = pc.max_product_assignment(circuit, x)
    assert marginals.dtype == torch.float32 and score.dtype == torch.float32
    torch.testing.assert_close(marginals.double(), pc.conditional_marginals(reference, x), rtol=0, atol=1e-5)
    expected, expected_score = pc.max_product_assignment(reference, x)
    assert torch.equal(assignment, expected)
    torch.testing.assert_close(score.double(), expected_score, rtol=0, atol=1e-4)
    for name, values in circuit.parameters.items():
        assert torch.equal(values, before[name]), name


@pytest.mark.parametrize("query", [pc.conditional_marginals, pc.max_product_assignment])
def test_bad_patches_are_refused(query):
    circuit = small(True)
    good = data_with_gaps(circuit)
    for bad in (good.double(), good.bool(), good[:, :2], good[:, :, 0], good[:0], good.clamp_max(-2),
                good.clamp_min(3), good.tolist()):
        with pytest.raises(ValueError, match="patch"):
            query(circuit, bad)
