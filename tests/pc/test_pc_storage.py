"""Saved circuits: damaged folders (NaN or negative probabilities, truncated or mis-shaped weights, another
format version) are refused with a clear ValueError, and saving leaves the nodes untouched."""
import json

import pytest
import torch

from hmmlvd import pc
from hmmlvd.io import CONFIG_FILE, WEIGHTS_FILE, load_tensors, save_tensors
from tests.pc.references import all_assignments, mixed_circuit


@pytest.fixture
def saved(tmp_path):
    circuit = pc.Circuit(mixed_circuit(), seed=3, dtype=torch.float64)
    circuit.save_pretrained(tmp_path)
    return tmp_path, circuit


def _edit_weights(folder, edit):
    tensors, metadata = load_tensors(folder / WEIGHTS_FILE)
    edit(tensors)
    save_tensors(folder / WEIGHTS_FILE, tensors, metadata)


def _first(tensors, prefix):
    return min((name for name in tensors if name.startswith(prefix)), key=lambda name: int(name.split(".")[1]))


def test_saving_writes_the_compiled_parameters_and_leaves_nodes_as_they_were(saved):
    folder, circuit = saved
    assert all(getattr(node, "params", None) is None for node in pc.topological_order(circuit.root))
    loaded = pc.Circuit.from_pretrained(folder, dtype=torch.float64)
    data = all_assignments([3, 3, 3])
    torch.testing.assert_close(loaded.log_likelihood(data), circuit.log_likelihood(data), rtol=0, atol=1e-12)


@pytest.mark.parametrize("value, message", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                                            (-0.25, "negative probabilities")])
@pytest.mark.parametrize("prefix", ["params.0", "params."])
def test_nan_or_negative_probabilities_are_refused(saved, value, message, prefix):
    folder, _ = saved

    def poison(tensors):
        name = "params.0" if prefix == "params.0" else max(tensors, key=lambda n: int(n.split(".")[1]))
        tensors[name][0, 0] = value              # an input's table, then the root's sum weights
    _edit_weights(folder, poison)
    with pytest.raises(ValueError, match=message):
        pc.Circuit.from_pretrained(folder)


def test_a_row_made_all_negative_is_refused_not_renormalised(saved):
    folder, _ = saved
    _edit_weights(folder, lambda tensors: tensors[_first(tensors, "params.")].neg_())
    with pytest.raises(ValueError, match="negative probabilities"):
        pc.Circuit.from_pretrained(folder)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.02])
def test_truncated_weights_are_refused(saved, keep):
    folder, _ = saved
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        pc.Circuit.from_pretrained(folder)


@pytest.mark.parametrize("prefix", ["params.", "edges."])
def test_a_tensor_of_the_wrong_shape_is_refused(saved, prefix):
    folder, _ = saved

    def cut(tensors):
        name = _first(tensors, prefix)
        tensors[name] = tensors[name][:-1]
    _edit_weights(folder, cut)
    with pytest.raises(ValueError, match=r"does not hold a valid circuit: .*(shape|edges)"):
        pc.Circuit.from_pretrained(folder)


def test_a_missing_tensor_is_refused(saved):
    folder, _ = saved
    _edit_weights(folder, lambda tensors: tensors.pop(_first(tensors, "edges.")))
    with pytest.raises(ValueError, match="node .* malformed"):
        pc.Circuit.from_pretrained(folder)


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_another_format_version_is_refused(saved, version):
    folder, _ = saved
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "format_version": version}))
    with pytest.raises(ValueError, match=f"format_version {version!r} for model_type 'circuit'; this hmmlvd reads "
                                         "version 1"):
        pc.Circuit.from_pretrained(folder)


def test_configs_that_are_not_circuits_are_refused(saved):
    folder, _ = saved
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "nodes": []}))
    with pytest.raises(ValueError, match="lists no circuit nodes"):
        pc.Circuit.from_pretrained(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "nodes": [{"kind": "sum", "children": [3]}]}))
    with pytest.raises(ValueError, match="node 0 of the saved circuit is malformed"):
        pc.Circuit.from_pretrained(folder)
