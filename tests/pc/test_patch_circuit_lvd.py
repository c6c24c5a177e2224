"""Lemma-1 training of patch circuits: each sub-circuit sees only its cluster's patches, p(Z) only the assignments."""
import pytest
import torch

from hmmlvd import em, pc
from tests.pc.patch_reference import children_of, float64_params, post_order, transition_row


def small(tied: bool, seed: int = 5, num_clusters: int = 3) -> pc.PatchCircuit:
    config = pc.PatchCircuitConfig(num_patches=3, values_per_patch=4, num_clusters=num_clusters, hidden_size=2,
                                   latent_hidden_size=2, num_categories=4, tied=tied,
                                   value_parents=(1, -1, 1, 2), latent_parents=(1, -1, 1))
    return pc.PatchCircuit(config, seed=seed, dtype=torch.float64)


def hclt_nodes(parents, hidden, categories, leaf_params, transition_params, root_params, offset=0):
    """An HCLT from pc nodes with the given parameters; returns (root, {parameter name: node})."""
    children, built, named = children_of(parents), {}, {}
    for v in post_order(parents):
        named[f"leaf{v}"] = leaf = pc.inputs(offset + v, hidden, categories, leaf_params(v))
        messages = []
        for child in children[v]:
            weights = transition_params(transition_row(parents, child))
            named[f"edge{child}"] = pc.summation(built[child], hidden, weights)
            messages.append(named[f"edge{child}"])
        built[v] = pc.multiply(leaf, *messages) if messages else leaf
    named["root"] = pc.summation(built[list(parents).index(-1)], 1, root_params[None])
    return named["root"], named


def separate_patch_fit(circuit, stack, cluster, patches, epochs):
    """Fit sub-circuit (stack, cluster) alone, as a pc.Circuit, on ``patches`` [n, D]; returns its emissions."""
    config, params = circuit.config, float64_params(circuit)
    root, named = hclt_nodes(config.value_parents, config.hidden_size, config.num_categories,
                             lambda v: params["patch_emissions"][stack, cluster, v].T.contiguous(),
                             lambda row: params["patch_transitions"][stack, cluster, row],
                             params["patch_root"][stack, cluster])
    alone = pc.Circuit(root, dtype=torch.float64)
    em.fit(alone, patches, em.Constant(1.0, epochs), full_batch=True, pseudocount=0.1, progress=False)
    return torch.stack([alone.node_parameters(named[f"leaf{v}"]).T for v in range(config.values_per_patch)])


def separate_latent_fit(circuit, z, epochs):
    config, params = circuit.config, float64_params(circuit)
    root, named = hclt_nodes(config.latent_parents, config.latent_hidden_size, config.num_clusters,
                             lambda i: params["latent_emissions"][i], lambda row: params["latent_transitions"][0, row],
                             params["latent_root"][0])
    alone = pc.Circuit(root, dtype=torch.float64)
    em.fit(alone, z, em.Constant(1.0, epochs), full_batch=True, pseudocount=0.1, progress=False)
    return torch.stack([alone.node_parameters(named[f"leaf{i}"]) for i in range(config.num_patches)])


def random_data(count=60, seed=0, clusters=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (count, 3, 4), generator=generator)
    z = torch.randint(0, clusters, (count, 3), generator=generator)
    return x, z


@pytest.mark.parametrize("tied", [False, True])
def test_each_sub_circuit_equals_a_separate_fit_on_its_cluster(tied):
    circuit = small(tied)
    x, z = random_data()
    z[:, 1] = z[:, 1].clamp_max(1)                                    # cluster 2 never used at patch 1
    expected_patch = {}
    for stack, cluster in [(0, 0), (0, 2)] if tied else [(0, 1), (1, 0), (2, 2)]:
        patches = x[z == cluster] if tied else x[z[:, stack] == cluster, stack]
        expected_patch[stack, cluster] = separate_patch_fit(circuit, stack, cluster, patches, epochs=3)
    expected_latent = separate_latent_fit(circuit, z, epochs=3)
    pc.fit_lvd(circuit, x, z, em.Constant(1.0, 3), full_batch=True, pseudocount=0.1, progress=False)
    emissions = circuit.parameter_groups()["patch_emissions"].values
    for (stack, cluster), expected in expected_patch.items():
        torch.testing.assert_close(emissions[stack, cluster], expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(circuit.parameter_groups()["latent_emissions"].values, expected_latent,
                               rtol=1e-9, atol=1e-12)


def test_a_cluster_without_patches_keeps_its_parameters():
    circuit = small(False)
    before = {name: group.values.clone() for name, group in circuit.parameter_groups().items()}
    x, z = random_data()
    z[:, 1] = z[:, 1].clamp_max(1)
    pc.fit_lvd(circuit, x, z, em.Constant(1.0, 2), full_batch=True, pseudocount=0.0, progress=False)
    after = circuit.parameter_groups()
    for name in ("patch_root", "patch_transitions", "patch_emissions"):
        assert torch.equal(after[name].values[1, 2], before[name][1, 2])
        assert not torch.allclose(after[name].values[1, 1], before[name][1, 1])


def test_lvd_resumes_exactly(tmp_path):
    x, z = random_data(count=40)
    straight = small(False)
    pc.fit_lvd(straight, x, z, em.Constant(0.5, 2), batch_size=16, progress=False)
    resumed = small(False)
    pc.fit_lvd(resumed, x, z, em.Constant(0.5, 1), batch_size=16, progress=False, checkpoint_dir=tmp_path)
    resumed = small(False, seed=9)
    pc.fit_lvd(resumed, x, z, em.Constant(0.5, 2), batch_size=16, progress=False, checkpoint_dir=tmp_path,
               resume=True)
    for name, group in straight.parameter_groups().items():
        torch.testing.assert_close(resumed.parameter_groups()[name].values, group.values, rtol=0, atol=0)


def planted(count: int, seed: int, clusters: int = 6):
    """Patches of 4 values drawn from one of ``clusters`` product distributions, z a Markov chain over 3 patches."""
    generator = torch.Generator().manual_seed(seed)
    tables = torch.full((clusters, 4, clusters), 0.02)
    for c in range(clusters):
        for v in range(4):
            tables[c, v, (c + v) % clusters] = 1 - 0.02 * (clusters - 1)
    z = torch.zeros(count, 3, dtype=torch.long)
    z[:, 0] = torch.randint(0, clusters, (count,), generator=generator)
    for i in (1, 2):
        stay = torch.rand(count, generator=generator) < 0.7
        z[:, i] = torch.where(stay, z[:, i - 1], torch.randint(0, clusters, (count,), generator=generator))
    x = torch.multinomial(tables[z].reshape(-1, clusters), 1, generator=generator).view(count, 3, 4)
    return x, z


def planted_model(seed: int) -> pc.PatchCircuit:
    config = pc.PatchCircuitConfig(num_patches=3, values_per_patch=4, num_clusters=6, hidden_size=2,
                                   num_categories=6, value_parents=(1, -1, 1, 2), latent_parents=(1, -1, 1))
    return pc.PatchCircuit(config, seed=seed, dtype=torch.float64)


def test_lvd_from_planted_clusters_beats_random_init():
    x, z = planted(400, seed=0)
    test_x, test_z = planted(400, seed=1)
    budget = dict(full_batch=True, pseudocount=0.1, progress=False)
    lvd = planted_model(seed=2)
    pc.fit_lvd(lvd, x, z, em.Constant(1.0, 5), **budget)
    em.fit(lvd, x, em.Constant(1.0, 5), **budget)
    recovered = lvd.cluster_log_likelihoods(test_x).argmax(-1)
    assert (recovered == test_z).double().mean().item() > 0.95
    scores = []
    for seed in range(3):
        baseline = planted_model(seed)
        em.fit(baseline, x, em.Constant(1.0, 10), **budget)
        scores.append(baseline.log_likelihood(test_x).mean().item())
    assert lvd.log_likelihood(test_x).mean().item() > max(scores) + 0.1        # measured: -10.57 vs best -10.81


def test_latent_distribution_step_only_moves_p_z_and_never_lowers_the_likelihood():
    x, z = planted(200, seed=3)
    circuit = planted_model(seed=0)
    pc.fit_lvd(circuit, x, z, em.Constant(1.0, 2), full_batch=True, progress=False)
    before = {name: group.values.clone() for name, group in circuit.parameter_groups().items()}
    history = pc.fit_latent_distribution(circuit, x, em.Constant(1.0, 4), full_batch=True, progress=False)
    values = history.train_log_likelihood
    assert all(later >= earlier - 1e-9 for earlier, later in zip(values, values[1:]))
    after = circuit.parameter_groups()
    for name in ("patch_root", "patch_transitions", "patch_emissions"):
        assert torch.equal(after[name].values, before[name])
    assert not torch.equal(after["latent_emissions"].values, before["latent_emissions"])
