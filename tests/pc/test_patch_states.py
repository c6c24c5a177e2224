"""Patch models fitted in closed form with their hidden states observed (pc.patch_state_bins, pc.fit_patch_states),
against loop-by-loop references on tiny circuits."""
import math

import pytest
import torch

from hmmlvd import em, pc
from tests.pc.patch_reference import transition_row


def circuit(tied: bool, hidden: int = 3, categories: int = 6, seed: int = 1) -> pc.PatchCircuit:
    config = pc.PatchCircuitConfig(num_patches=3, values_per_patch=4, num_clusters=2, hidden_size=hidden,
                                   num_categories=categories, tied=tied, value_parents=(1, -1, 1, 2),
                                   latent_parents=(1, -1, 1))
    return pc.PatchCircuit(config, seed=seed, dtype=torch.float64)


def data(count: int = 40, categories: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, categories, (count, 3, 4), generator=generator)
    x[: count // 2, :, 0] = 0                               # a value with much mass at one position
    return x, torch.randint(0, 2, (count, 3), generator=generator)


def sub_circuit(config, patch, cluster):
    return cluster if config.tied else patch * config.num_clusters + cluster


@pytest.mark.parametrize("tied", [True, False])
def test_bins_are_mid_point_quantiles_of_each_sub_circuit_and_position(tied):
    model = circuit(tied)
    config, (x, z) = model.config, data()
    states = pc.patch_state_bins(model, x, z)
    for n in range(len(x)):
        for i in range(3):
            g = sub_circuit(config, i, int(z[n, i]))
            for j in range(4):
                same = [int(x[m, p, j]) for m in range(len(x)) for p in range(3)
                        if sub_circuit(config, p, int(z[m, p])) == g]
                value = int(x[n, i, j])
                below, equal = sum(v < value for v in same), sum(v == value for v in same)
                expected = min(config.hidden_size - 1, math.floor(config.hidden_size * (below + equal / 2) / len(same)))
                assert int(states[n, i, j]) == expected


def test_evenly_spread_values_fall_into_equal_bins():
    model = circuit(True, hidden=4, categories=8)
    x = torch.arange(8).repeat(6)[:, None, None].expand(-1, 3, 4).contiguous()       # each value 6 times
    states = pc.patch_state_bins(model, x, torch.zeros(len(x), 3, dtype=torch.long))
    assert states[:8, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("tied", [True, False])
def test_closed_form_is_the_normalised_complete_data_counts(tied):
    model = circuit(tied, seed=4)
    config, (x, z) = model.config, data(seed=2)
    before = {name: group.values.clone() for name, group in model.parameter_groups().items()}
    states = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3))   # state 2 never used
    pc.fit_patch_states(model, x, z, states, pseudocount=0.3)
    params = {name: group.values for name, group in model.parameter_groups().items()}
    hidden, categories, parents = config.hidden_size, config.num_categories, config.value_parents
    groups = config.num_clusters * (1 if tied else config.num_patches)
    root_counts = torch.zeros(groups, hidden, dtype=torch.float64)
    transition_counts = torch.zeros(groups, 3, hidden, hidden, dtype=torch.float64)
    emission_counts = torch.zeros(groups, 4, categories, hidden, dtype=torch.float64)
    for n in range(len(x)):
        for i in range(3):
            g, h = sub_circuit(config, i, int(z[n, i])), states[n, i]
            root_counts[g, h[1]] += 1
            for node in (0, 2, 3):
                transition_counts[g, transition_row(parents, node), h[parents[node]], h[node]] += 1
            for j in range(4):
                emission_counts[g, j, x[n, i, j], h[j]] += 1
    for name, counts, dim in (("patch_root", root_counts, 1), ("patch_transitions", transition_counts, 3),
                              ("patch_emissions", emission_counts, 2)):
        expected = (counts + 0.3 / counts.shape[dim]) / (counts + 0.3 / counts.shape[dim]).sum(dim, keepdim=True)
        kept = before[name].reshape(counts.shape)
        expected = torch.where(counts.sum(dim, keepdim=True) > 0, expected, kept)
        torch.testing.assert_close(params[name].reshape(counts.shape), expected)
    torch.testing.assert_close(params["patch_emissions"][..., 2], before["patch_emissions"][..., 2])
    for name in ("latent_root", "latent_transitions", "latent_emissions"):
        torch.testing.assert_close(params[name], before[name], rtol=0, atol=0)


def complete_log_likelihood(model, x, z, states):
    """Σ log p(x, h | z) over every patch, hidden states observed (naive loops)."""
    config, params = model.config, {n: g.values for n, g in model.parameter_groups().items()}
    stack = lambda i: 0 if config.tied else i
    total = 0.0
    for n in range(len(x)):
        for i in range(3):
            c, h = int(z[n, i]), states[n, i]
            total += math.log(params["patch_root"][stack(i), c, h[1]])
            for node in (0, 2, 3):
                row = transition_row(config.value_parents, node)
                total += math.log(params["patch_transitions"][stack(i), c, row, h[config.value_parents[node]], h[node]])
            for j in range(4):
                total += math.log(params["patch_emissions"][stack(i), c, j, x[n, i, j], h[j]])
    return total


@pytest.mark.parametrize("tied", [True, False])
def test_closed_form_maximises_the_complete_data_likelihood(tied):
    model, (x, z) = circuit(tied, seed=6), data(seed=5)
    states = pc.fit_patch_states(model, x, z, pseudocount=0.0)
    best = complete_log_likelihood(model, x, z, states)
    fitted = {n: g.values.clone() for n, g in model.parameter_groups().items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for name, dim in (("patch_root", 2), ("patch_transitions", 4), ("patch_emissions", 3)):
            noisy = fitted[name] * torch.exp(0.2 * torch.randn(fitted[name].shape, generator=generator,
                                                               dtype=torch.float64))
            model.set_parameters({**fitted, name: noisy / noisy.sum(dim, keepdim=True)})
            assert complete_log_likelihood(model, x, z, states) < best
    model.set_parameters(fitted)


def test_lemma1_from_the_closed_form_never_lowers_the_complete_data_likelihood():
    model, (x, z) = circuit(True, seed=2), data(count=60, seed=7)
    pc.fit_patch_states(model, x, z)
    history = pc.fit_lvd(model, x, z, em.Constant(1.0, 4), full_batch=True, pseudocount=0.0, progress=False,
                         valid=(x, z))
    curve = history.valid_log_likelihood
    assert all(later >= earlier - 1e-9 for earlier, later in zip(curve, curve[1:]))


def test_bad_states_and_missing_values_are_refused():
    model, (x, z) = circuit(True), data()
    with pytest.raises(ValueError, match="hidden states in 0..2"):
        pc.fit_patch_states(model, x, z, torch.full(x.shape, 3))
    with pytest.raises(ValueError, match=r"\[N, P, D\]"):
        pc.fit_patch_states(model, x, z, torch.zeros(len(x), 3, dtype=torch.long))
    gappy = x.clone()
    gappy[0, 0, 0] = -1
    with pytest.raises(ValueError, match="missing values"):
        pc.patch_state_bins(model, gappy, z)
