"""PatchCircuit sampling and inpainting against brute force on trees deeper than one level.

Every circuit here is small enough to enumerate every complete input: the exact probability of each outcome is
``exp(log_likelihood)`` of that input (itself checked against brute force in test_patch_circuit.py), and the exact
conditional of an inpainting is the joint restricted to the inputs that agree with the observed values, normalised.
Samples are compared with Pearson's χ² at p = 0.001 (scipy's critical value for the degrees of freedom), cells
whose expected count is below 5 pooled into one. Parameters are drawn from a sparse Dirichlet (α = 0.4) so that
the hidden states matter: sampling a child before its parent (the levels in the wrong order), or ignoring the
observed values, moves the frequencies far outside the critical value (see the report of issue 24).
"""
import pytest
import torch
from scipy.stats import chi2

from hmmlvd import pc
from tests.pc.patch_reference import all_patches

SAMPLES = 20_000


def sharp_circuit(config: pc.PatchCircuitConfig, seed: int) -> pc.PatchCircuit:
    """``config``'s circuit (float64) with every distribution drawn from Dirichlet(0.4)."""
    circuit = pc.PatchCircuit(config, seed=seed, dtype=torch.float64)
    torch.manual_seed(seed)
    dirichlet = torch.distributions.Dirichlet
    values = {}
    for name, group in circuit.parameter_groups().items():
        moved = group.values.movedim(group.dim, -1)
        draws = dirichlet(torch.full((moved.shape[-1],), 0.4, dtype=torch.float64)).sample(moved.shape[:-1])
        values[name] = draws.clamp_min(1e-6).movedim(-1, group.dim)
        values[name] = (values[name] / values[name].sum(group.dim, keepdim=True)).contiguous()
    circuit.set_parameters(values)
    return circuit


def codes_of(x: torch.Tensor, num_categories: int) -> torch.Tensor:
    """Each input [N, P, D] (or its selected values [N, m]) as one integer in the order of ``all_patches``."""
    flat = x.reshape(len(x), -1)
    weights = num_categories ** torch.arange(flat.shape[1] - 1, -1, -1)
    return flat @ weights


def chi_square_test(codes: torch.Tensor, probabilities: torch.Tensor, alpha: float = 0.001) -> tuple[float, float]:
    """Pearson's χ² of the sample ``codes`` against the exact ``probabilities`` (cells with an expected count below
    5 pooled) and the critical value at level ``alpha``."""
    observed = torch.bincount(codes, minlength=len(probabilities)).double()
    expected = probabilities * len(codes)
    small = expected < 5
    if small.any():
        observed = torch.cat([observed[~small], observed[small].sum()[None]])
        expected = torch.cat([expected[~small], expected[small].sum()[None]])
    statistic = (((observed - expected) ** 2) / expected).sum().item()
    return statistic, float(chi2.ppf(1 - alpha, len(expected) - 1))


CASES = {
    # name: (num_patches, values_per_patch, categories, value_parents, latent_parents, tied)
    "value chain of 3, untied": (2, 3, 2, None, None, False),
    "value chain of 3, tied": (2, 3, 2, None, None, True),
    "branching value tree of depth 2, untied": (2, 4, 2, (1, -1, 1, 2), None, False),
    "latent chain of 3, three categories, tied": (3, 2, 3, (-1, 0), (-1, 0, 1), True),
    "branching latent tree of depth 2, untied": (4, 2, 2, (1, -1), (2, 2, -1, 0), False),
}


def case_circuit(name: str, seed: int = 7) -> pc.PatchCircuit:
    patches, values, categories, value_parents, latent_parents, tied = CASES[name]
    config = pc.PatchCircuitConfig(num_patches=patches, values_per_patch=values, num_clusters=2, hidden_size=2,
                                   latent_hidden_size=2, num_categories=categories, tied=tied,
                                   value_parents=value_parents, latent_parents=latent_parents)
    return sharp_circuit(config, seed)


def with_exact_joint(name: str) -> tuple[pc.PatchCircuit, torch.Tensor, torch.Tensor]:
    """The circuit of case ``name``, every complete input and its exact probability."""
    circuit = case_circuit(name)
    everything = all_patches(circuit.config)
    return circuit, everything, circuit.log_likelihood(everything).exp()


def exact_conditional(everything: torch.Tensor, exact: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """p(hidden values | observed values of ``pattern``), the hidden values in the order of ``all_patches``."""
    matching = ((everything == pattern) | (pattern < 0)).flatten(1).all(1)
    return exact[matching] / exact[matching].sum()


@pytest.mark.parametrize("name", list(CASES))
def test_sampling_matches_the_exact_joint(name):
    circuit, _, exact = with_exact_joint(name)
    config = circuit.config
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    samples = pc.sample(circuit, SAMPLES, generator=torch.Generator().manual_seed(11))
    assert samples.shape == (SAMPLES, config.num_patches, config.values_per_patch)
    statistic, critical = chi_square_test(codes_of(samples, config.num_categories), exact)
    assert statistic < critical, f"{name}: χ² {statistic:.1f} >= {critical:.1f}"


def evidence_patterns(config: pc.PatchCircuitConfig) -> list[torch.Tensor]:
    """Two evidence patterns [P, D] of one complete input, each hiding several regions: a whole patch, a patch's
    root value, a patch's deepest value."""
    full = torch.randint(0, config.num_categories, (config.num_patches, config.values_per_patch),
                         generator=torch.Generator().manual_seed(3))
    first, second = full.clone(), full.clone()
    first[0] = -1                                     # the whole first patch
    first[-1, config.value_parents.index(-1)] = -1    # the root value of the last patch
    second[:, -1] = -1                                # the last value of every patch
    second[1, 0] = -1
    return [first, second]


@pytest.mark.parametrize("name", list(CASES))
def test_inpainting_of_several_regions_matches_the_exact_conditional(name):
    circuit, everything, exact = with_exact_joint(name)
    config = circuit.config
    patterns = evidence_patterns(config)
    per_pattern = SAMPLES // 2
    batch = torch.cat([pattern.expand(per_pattern, -1, -1) for pattern in patterns])   # both patterns in one call
    samples = pc.sample(circuit, evidence=batch, generator=torch.Generator().manual_seed(5))
    observed = batch >= 0
    assert torch.equal(samples[observed], batch[observed]) and bool((samples >= 0).all())
    for index, pattern in enumerate(patterns):
        hidden = pattern < 0
        conditional = exact_conditional(everything, exact, pattern)
        part = samples[index * per_pattern:(index + 1) * per_pattern]
        statistic, critical = chi_square_test(codes_of(part[:, hidden], config.num_categories), conditional)
        assert statistic < critical, f"{name}, pattern {index}: χ² {statistic:.1f} >= {critical:.1f}"


def test_the_conditional_differs_from_the_marginal():
    """The inpainting tests bite: for every case and pattern, the exact conditional of the hidden values is far
    (χ² of a marginal-sized sample) from their marginal, so a sampler that ignored the observed values would fail."""
    for name in CASES:
        circuit, everything, exact = with_exact_joint(name)
        for pattern in evidence_patterns(circuit.config):
            hidden = pattern < 0
            conditional = exact_conditional(everything, exact, pattern)
            codes = codes_of(everything[:, hidden], circuit.config.num_categories)
            marginal = torch.zeros(len(conditional), dtype=torch.float64).index_add_(0, codes, exact)
            # the expected χ² of SAMPLES/2 marginal draws against the conditional, minus its df, is large
            divergence = (SAMPLES // 2) * ((marginal - conditional) ** 2 / conditional.clamp_min(1e-12)).sum().item()
            assert divergence > 2 * chi2.ppf(0.999, len(conditional) - 1), name


def test_set_parameters_accepts_a_non_contiguous_tensor():
    circuit = case_circuit("value chain of 3, untied")
    x = pc.sample(circuit, 4, generator=torch.Generator().manual_seed(0))
    before = circuit.log_likelihood(x)
    emissions = circuit.parameter_groups()["patch_emissions"].values
    transposed = emissions.transpose(-1, -2).contiguous().transpose(-1, -2)     # equal values, other strides
    assert torch.equal(transposed, emissions) and not transposed.is_contiguous()
    circuit.set_parameters({"patch_emissions": transposed})
    assert torch.equal(circuit.log_likelihood(x), before)
