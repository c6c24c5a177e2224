"""Compiled circuits against a per-unit log-space reference and brute-force enumeration (float64)."""
import pytest
import torch

from hmmlvd import em, pc
from hmmlvd.pc.structures import rat_spn
from tests.pc.references import all_assignments, assert_cuda_matches_cpu, mixed_circuit, naive_counts


@pytest.fixture(params=["mixed", "rat"])
def tiny(request):
    root = mixed_circuit() if request.param == "mixed" else rat_spn(4, 3, depth=2, num_repetitions=2,
                                                                    num_sums=3, num_input_units=2, seed=3)
    return root, pc.Circuit(root, seed=1, dtype=torch.float64)


def test_normalised_and_matches_reference(tiny):
    root, circuit = tiny
    everything = all_assignments([3] * circuit.num_variables)
    log_p = circuit.log_likelihood(everything)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    data = everything[torch.randperm(len(everything), generator=torch.Generator().manual_seed(0))[:12]].clone()
    data[0, 1] = -1
    data[1] = -1
    data[2, :2] = -1
    expected, _ = naive_counts(circuit, root, data)
    torch.testing.assert_close(circuit.log_likelihood(data), expected, rtol=0, atol=1e-12)


def test_missing_values_are_marginalised(tiny):
    _, circuit = tiny
    everything = all_assignments([3] * circuit.num_variables)
    joint = circuit.log_likelihood(everything).exp()
    partial = torch.tensor([[2] + [-1] * (circuit.num_variables - 2) + [1]])
    mask = (everything[:, 0] == 2) & (everything[:, -1] == 1)
    assert circuit.log_likelihood(partial).exp().item() == pytest.approx(joint[mask].sum().item(), rel=1e-12)
    assert circuit.log_likelihood(torch.full((1, circuit.num_variables), -1)).item() == pytest.approx(0, abs=1e-12)


def test_expected_counts_equal_autograd_flows(tiny):
    root, circuit = tiny
    data = torch.randint(0, 3, (10, circuit.num_variables), generator=torch.Generator().manual_seed(1))
    data[3, 0] = -1
    data[4, 2:] = -1
    counts = circuit.expected_counts(data)
    _, reference = naive_counts(circuit, root, data)
    seen = 0
    for name in circuit.parameter_groups():
        for node in circuit._named_groups[name].nodes:
            rows = circuit._named_groups[name].nodes
            if name.startswith("sum"):
                got = counts[name][rows.index(node)]
            else:
                offset = sum(n.num_units for n in rows[:rows.index(node)])
                got = counts[name][offset:offset + node.num_units]
            torch.testing.assert_close(got, reference[node], rtol=1e-9, atol=1e-10)
            seen += 1
    assert seen == len(reference)


def test_full_batch_em_never_decreases_likelihood():
    root = rat_spn(6, 2, depth=2, num_repetitions=3, num_sums=4, num_input_units=3, seed=0)
    circuit = pc.Circuit(root, seed=0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    data = (torch.rand(300, 6, generator=generator) < torch.linspace(0.1, 0.9, 6)).long()
    data[:, 1] = data[:, 0] ^ (torch.rand(300, generator=generator) < 0.1).long()
    data[::7, 3] = -1
    history = em.fit(circuit, data, em.Constant(1.0, 10), full_batch=True, pseudocount=0.0, progress=False)
    lls = history.train_log_likelihood
    assert all(b >= a - 1e-10 for a, b in zip(lls, lls[1:])), lls
    assert lls[-1] > lls[0] + 0.05


def test_fit_resumes_from_checkpoint(tmp_path):
    data = torch.randint(0, 2, (200, 5), generator=torch.Generator().manual_seed(2))
    schedule = em.LinearAnneal(0.5, 0.1, 3)

    def trained(checkpoint_dir=None, epochs_first=None):
        circuit = pc.Circuit(rat_spn(5, 2, depth=1, num_repetitions=2, num_sums=3, num_input_units=2), seed=4)
        if epochs_first:
            em.fit(circuit, data, em.LinearAnneal(0.5, 0.1, 3), batch_size=64, checkpoint_dir=checkpoint_dir,
                   progress=False, on_epoch_end=_stop_after(epochs_first))
            circuit = pc.Circuit(rat_spn(5, 2, depth=1, num_repetitions=2, num_sums=3, num_input_units=2), seed=9)
        em.fit(circuit, data, schedule, batch_size=64, checkpoint_dir=checkpoint_dir, resume=checkpoint_dir is not None,
               progress=False)
        return circuit.parameter_groups()

    straight = trained()
    with pytest.raises(_Stop):
        trained(tmp_path, epochs_first=1)
    resumed = trained(tmp_path)
    for name in straight:
        torch.testing.assert_close(resumed[name].values, straight[name].values)


class _Stop(Exception):
    pass


def _stop_after(epochs):
    def callback(epoch, history):
        if epoch + 1 == epochs:
            raise _Stop
    return callback


def test_non_decomposable_and_non_smooth_circuits_are_rejected():
    x0, x1 = pc.inputs(0, 2), pc.inputs(1, 2)
    with pytest.raises(ValueError, match="bad_product is not decomposable"):
        pc.multiply(x0, pc.multiply(x0, x1), name="bad_product")
    with pytest.raises(ValueError, match="bad_sum is not smooth"):
        pc.summation([x0, pc.multiply(x0, x1)], 2, name="bad_sum")


def test_bad_construction_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="row of params must sum to 1"):
        pc.inputs(0, 2, 2, params=torch.tensor([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="shape"):
        pc.summation(pc.inputs(0, 2), 1, params=torch.ones(1, 3) / 3)
    with pytest.raises(ValueError, match="equal numbers of units"):
        pc.multiply(pc.inputs(0, 2), pc.inputs(1, 3))
    with pytest.raises(ValueError, match="exactly one unit"):
        pc.Circuit(pc.inputs(0, 2))
    circuit = pc.Circuit(pc.summation(pc.multiply(pc.inputs(0, 2, 3), pc.inputs(1, 2, 2)), 1))
    with pytest.raises(ValueError, match=r"LongTensor \[batch, 2\]"):
        circuit.log_likelihood(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="category ids"):
        circuit.log_likelihood(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="num_categories"):
        circuit.log_likelihood(torch.tensor([[2, 2]]))     # variable 1 has only 2 categories
    with pytest.raises(ValueError, match="unknown parameter group"):
        circuit.set_parameters({"nope": torch.ones(1)})


def test_save_and_load_round_trip(tmp_path):
    circuit = pc.Circuit(mixed_circuit(), seed=3, dtype=torch.float64)
    data = all_assignments([3, 3, 3])
    circuit.save_pretrained(tmp_path / "model")
    loaded = pc.Circuit.from_pretrained(tmp_path / "model", dtype=torch.float64)
    torch.testing.assert_close(loaded.log_likelihood(data), circuit.log_likelihood(data), rtol=0, atol=1e-12)
    (tmp_path / "model" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a saved hmmlvd circuit"):
        pc.Circuit.from_pretrained(tmp_path / "model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    root = rat_spn(8, 3, depth=2, num_repetitions=2, num_sums=4, num_input_units=3, seed=0)
    data = torch.randint(-1, 3, (64, 8), generator=torch.Generator().manual_seed(0))
    assert_cuda_matches_cpu(root, data, torch.float32, 1e-5)


def test_variables_outside_the_scope_are_ignored():
    circuit = pc.Circuit(pc.summation(pc.multiply(pc.inputs(0, 2, 2), pc.inputs(3, 2, 2)), 1), dtype=torch.float64)
    assert circuit.num_variables == 4
    x = torch.tensor([[1, 7, -1, 0], [1, 0, 5, 0]])
    torch.testing.assert_close(circuit.log_likelihood(x)[0], circuit.log_likelihood(x)[1])
    marginals = pc.conditional_marginals(circuit, x)
    assert marginals[:, 1:3].abs().sum() == 0 and marginals[0, 0].tolist() == [0.0, 1.0]
