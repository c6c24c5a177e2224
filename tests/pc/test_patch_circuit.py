"""PatchCircuit against brute force, the same circuit built from pc nodes, and a naive per-node recursion."""
import pytest
import torch

from hmmlvd import em, pc
from tests.pc.patch_reference import all_patches, naive_counts, node_circuit


def tiny_binary(tied: bool) -> pc.PatchCircuit:
    config = pc.PatchCircuitConfig(num_patches=2, values_per_patch=2, num_clusters=2, hidden_size=2,
                                   num_categories=2, tied=tied)
    return pc.PatchCircuit(config, seed=3, dtype=torch.float64)


def small(tied: bool, **options) -> pc.PatchCircuit:
    """P = 4 patches of D = 4 ternary values, k = 3, H = 2, Ht = 2, branching trees."""
    config = pc.PatchCircuitConfig(num_patches=4, values_per_patch=4, num_clusters=3, hidden_size=2,
                                   latent_hidden_size=2, num_categories=3, tied=tied,
                                   value_parents=(1, -1, 1, 2), latent_parents=(2, 2, -1, 0))
    return pc.PatchCircuit(config, seed=5, **{"dtype": torch.float64, **options})


def chi_square(codes: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Pearson's statistic of the sample ``codes`` against the exact ``probabilities``."""
    observed = torch.bincount(codes, minlength=len(probabilities)).double()
    expected = probabilities * len(codes)
    return (((observed - expected) ** 2) / expected).sum().item()


def data_with_gaps(circuit, count=6, seed=0):
    config = circuit.config
    x = torch.randint(0, config.num_categories, (count, config.num_patches, config.values_per_patch),
                      generator=torch.Generator().manual_seed(seed))
    x[0, 1, 2] = -1
    x[1, 0] = -1
    x[2] = -1
    return x


@pytest.mark.parametrize("tied", [False, True])
def test_sums_to_one_and_marginalises(tied):
    circuit = tiny_binary(tied)
    everything = all_patches(circuit.config)
    joint = circuit.log_likelihood(everything).exp()
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-12)
    partial = torch.tensor([[[1, -1], [-1, 0]]])
    matching = (everything[:, 0, 0] == 1) & (everything[:, 1, 1] == 0)
    assert circuit.log_likelihood(partial).exp().item() == pytest.approx(joint[matching].sum().item(), rel=1e-12)
    float32 = pc.PatchCircuit(circuit.config, seed=3)
    assert float32.log_likelihood(everything).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_log_likelihood_matches_node_circuit(tied):
    circuit = small(tied)
    x = data_with_gaps(circuit)
    reference = node_circuit(circuit).log_likelihood(x.reshape(len(x), -1))
    torch.testing.assert_close(circuit.log_likelihood(x), reference, rtol=0, atol=1e-11)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("gaps", [True, False])
def test_expected_counts_match_autograd_of_naive_recursion(tied, gaps):
    circuit = small(tied)
    x = data_with_gaps(circuit, count=5)
    if not gaps:                                          # every value observed: the pass skips the masking
        x = x.clamp_min(0)
    logs, reference = naive_counts(circuit, x)
    counts = circuit.zero_counts()
    torch.testing.assert_close(circuit.accumulate_counts(x, counts), logs, rtol=0, atol=1e-11)
    for name, expected in reference.items():
        torch.testing.assert_close(counts[name], expected, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("skewed", [False, True])
def test_complete_data_counts_match_autograd(tied, skewed):
    # skewed: almost every patch in cluster 0, so the Lemma-1 pass splits that sub-circuit's columns over
    # several blocks and leaves other sub-circuits empty
    circuit = small(tied)
    x = data_with_gaps(circuit, count=5, seed=1)
    z = torch.randint(0, 3, (5, 4), generator=torch.Generator().manual_seed(2))
    if skewed:
        z = torch.where(torch.arange(20).view(5, 4) == 7, z.clamp_min(1), torch.zeros_like(z))
    logs, reference = naive_counts(circuit, x, z)
    counts = circuit.zero_counts()
    torch.testing.assert_close(pc.accumulate_complete_counts(circuit, x, z, counts), logs, rtol=0, atol=1e-11)
    for name, expected in reference.items():
        torch.testing.assert_close(counts[name], expected, rtol=1e-9, atol=1e-11, msg=name)


def test_chunking_changes_nothing():
    whole, chunked = small(False), small(False, chunk_elements=40)
    x = data_with_gaps(whole, count=7)
    z = torch.randint(0, 3, (7, 4), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(chunked.log_likelihood(x), whole.log_likelihood(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(pc.complete_log_likelihood(chunked, x, z), pc.complete_log_likelihood(whole, x, z))
    expected = whole.expected_counts(x)
    for name, counts in chunked.expected_counts(x).items():
        torch.testing.assert_close(counts, expected[name], rtol=1e-12, atol=1e-12)


def test_buffers_kept_between_calls_change_nothing():
    # the circuit keeps its pass buffers from call to call: bigger and smaller batches, with and without gaps, in
    # any order, must give what a fresh circuit gives for each
    circuit = small(True, chunk_elements=100)
    no_gaps = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    batches = [data_with_gaps(circuit, count=7), no_gaps, data_with_gaps(circuit, count=5, seed=2)]
    for x in batches + batches[::-1]:
        fresh = small(True, chunk_elements=100)
        torch.testing.assert_close(circuit.cluster_log_likelihoods(x), fresh.cluster_log_likelihoods(x),
                                   rtol=0, atol=0)
        counts, expected = circuit.zero_counts(), fresh.zero_counts()
        torch.testing.assert_close(circuit.accumulate_counts(x, counts), fresh.accumulate_counts(x, expected),
                                   rtol=0, atol=0)
        for name in counts:
            torch.testing.assert_close(counts[name], expected[name], rtol=0, atol=0, msg=name)


def test_latent_pass_keeps_subnormal_weights_out_of_its_products():
    # cluster log-likelihoods 90-100 nats below a patch's best give float32 weights below the smallest normal
    # number, on which the CPU's GEMMs run 50-200x slower; the latent pass sets them to zero, which changes the
    # likelihood and the counts by less than float32 resolves (float64 reference: the same circuit, no flush)
    circuit, reference = small(True, dtype=torch.float32), small(True)
    generator = torch.Generator().manual_seed(4)
    ll = -torch.rand(6, 4, 3, generator=generator, dtype=torch.float64) * 3
    ll[:, :, 1] -= 90 + 10 * torch.rand(6, 4, generator=generator, dtype=torch.float64)
    ll[0, 0] = torch.tensor([-1.0, -120.0, -97.0])
    tiny = torch.finfo(torch.float32).tiny
    unflushed = torch.exp(ll.float() - ll.float().amax(-1, keepdim=True))
    assert bool(((unflushed > 0) & (unflushed < tiny)).any())                            # the test makes some
    weights = circuit.latent_forward(ll.float())[1]
    assert not bool(((weights > 0) & (weights < tiny)).any())
    counts, expected = circuit.zero_counts(), reference.zero_counts()
    torch.testing.assert_close(circuit.accumulate_latent_counts(ll.float(), counts).double(),
                               reference.accumulate_latent_counts(ll, expected), rtol=1e-6, atol=1e-6)
    for name in ("latent_root", "latent_transitions", "latent_emissions"):
        torch.testing.assert_close(counts[name].double(), expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_changed_emissions_are_seen_by_every_pass():
    # the log of the emission table is kept between calls: replacing the parameters or changing them in place
    # must give what a fresh circuit with the same parameters gives
    circuit, fresh = small(True), small(True)
    x = data_with_gaps(circuit)
    before = circuit.log_likelihood(x)
    emissions = circuit.parameter_groups()["patch_emissions"].values
    replaced = em.normalize(emissions.flip(3) + 0.3, 3)
    circuit.set_parameters({"patch_emissions": replaced})
    fresh.set_parameters({"patch_emissions": replaced.clone()})
    changed = circuit.log_likelihood(x)
    assert not torch.allclose(changed, before)
    torch.testing.assert_close(changed, fresh.log_likelihood(x), rtol=0, atol=0)
    circuit.parameter_groups()["patch_emissions"].values.copy_(emissions)
    torch.testing.assert_close(circuit.log_likelihood(x), before, rtol=0, atol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_full_batch_em_never_decreases_the_likelihood(tied):
    circuit = small(tied)
    x = torch.randint(0, 3, (40, 4, 4), generator=torch.Generator().manual_seed(4))
    history = em.fit(circuit, x, em.Constant(1.0, 8), full_batch=True, batch_size=16, pseudocount=0.0,
                     progress=False)
    values = history.train_log_likelihood
    assert all(later >= earlier - 1e-9 for earlier, later in zip(values, values[1:]))
    assert values[-1] > values[0] + 0.1


def test_sampling_frequencies_match_exact_marginals():
    circuit = tiny_binary(False)
    everything = all_patches(circuit.config)
    exact = circuit.log_likelihood(everything).exp()
    samples = pc.sample(circuit, 20000, generator=torch.Generator().manual_seed(0))
    codes = samples.reshape(len(samples), -1) @ torch.tensor([8, 4, 2, 1])
    assert chi_square(codes, exact) < 37.7                                  # df 15, p = 0.001


@pytest.mark.parametrize("tied", [False, True])
def test_inpainting_matches_exact_conditionals(tied):
    circuit = tiny_binary(tied)
    everything = all_patches(circuit.config)
    exact = circuit.log_likelihood(everything).exp()
    evidence = torch.tensor([[[1, -1], [-1, 0]]]).repeat(20000, 1, 1)
    samples = pc.sample(circuit, evidence=evidence, generator=torch.Generator().manual_seed(1))
    assert (samples[:, 0, 0] == 1).all() and (samples[:, 1, 1] == 0).all()
    matching = (everything[:, 0, 0] == 1) & (everything[:, 1, 1] == 0)
    conditional = exact[matching] / exact[matching].sum()                    # over (x[0,1], x[1,0]) in binary order
    codes = samples[:, 0, 1] * 2 + samples[:, 1, 0]
    assert chi_square(codes, conditional) < 16.3                            # df 3, p = 0.001


def test_save_and_load_round_trip(tmp_path):
    circuit = small(True)
    circuit.save_pretrained(tmp_path / "model")
    loaded = pc.PatchCircuit.from_pretrained(tmp_path / "model", dtype=torch.float64)
    assert loaded.config == circuit.config and loaded.num_parameters == circuit.num_parameters
    x = data_with_gaps(circuit)
    for name, group in circuit.parameter_groups().items():                   # float64 written, float64 read
        assert torch.equal(loaded.parameter_groups()[name].values, group.values), name
    assert torch.equal(loaded.log_likelihood(x), circuit.log_likelihood(x))
    (tmp_path / "model" / "config.json").write_text('{"model_type": "hmm"}')
    with pytest.raises(ValueError, match="patch_circuit"):
        pc.PatchCircuit.from_pretrained(tmp_path / "model")


def test_parameter_counts_and_bad_inputs():
    config = pc.PatchCircuitConfig(num_patches=49, values_per_patch=16, num_clusters=16, hidden_size=16)
    per_cluster = 16 * 256 * 16 + 15 * 16 * 16 + 16
    latent = 16 + 48 * 16 * 16 + 49 * 16 * 16
    assert config.num_parameters == 49 * 16 * per_cluster + latent
    assert pc.PatchCircuitConfig(49, 16, 16, 16, tied=True).num_parameters == 16 * per_cluster + latent
    circuit = small(False)
    with pytest.raises(ValueError, match=r"\[B, 4, 4\]"):
        circuit.log_likelihood(torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        circuit.log_likelihood(torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="assignments"):
        pc.complete_log_likelihood(circuit, torch.zeros(2, 4, 4, dtype=torch.long), torch.full((2, 4), 3))
    with pytest.raises(ValueError, match="one rooted tree"):
        pc.PatchCircuitConfig(2, 3, 2, value_parents=(-1, -1, 0))
    with pytest.raises(ValueError, match="hidden_size"):
        pc.PatchCircuitConfig(2, 3, 2, hidden_size=0)


def test_patch_trees_follow_the_dependencies():
    generator = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3000, 3, 1), generator=generator)
    noise = torch.randint(0, 256, (3000, 3, 2), generator=generator)
    x = torch.cat([noise[..., :1], base, base, noise[..., 1:]], dim=2)          # values 1 and 2 are equal
    z = torch.randint(0, 4, (3000, 3), generator=generator)
    z[:, 2] = z[:, 0]                                                            # latents 0 and 2 are equal
    value_parents, latent_parents = pc.structures.patch_trees(x, z, 4)
    assert value_parents[1] == 2 or value_parents[2] == 1
    assert latent_parents[0] == 2 or latent_parents[2] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tied", [False, True])
def test_cuda_matches_cpu(tied):
    cpu, gpu = small(tied), small(tied, device="cuda")
    x = data_with_gaps(cpu)
    z = torch.randint(0, 3, (len(x), 4), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gpu.log_likelihood(x).cpu(), cpu.log_likelihood(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(pc.complete_log_likelihood(gpu, x, z).cpu(), pc.complete_log_likelihood(cpu, x, z))
    expected = cpu.expected_counts(x)
    for name, counts in gpu.expected_counts(x).items():
        torch.testing.assert_close(counts.cpu(), expected[name], rtol=1e-9, atol=1e-10)
    samples = pc.sample(gpu, evidence=x, generator=torch.Generator().manual_seed(0))
    assert samples.device.type == "cuda" and bool((samples[x >= 0] == x.cuda()[x >= 0]).all())
    em.fit(gpu, x, em.Constant(1.0, 1), full_batch=True, progress=False)
