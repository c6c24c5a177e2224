"""Nodes stay symbolic: compiling draws parameters into the circuit only, names are deterministic,
and num_categories is inferred from data where it can be."""
import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc.layers import LayerPlan, ProductLayer, SumLayer, plan_layers
from hmmlvd.pc.structures import hclt
from tests.pc.references import all_assignments, mixed_circuit
from tests.pc.test_pc_structures import correlated_data


def test_compiling_leaves_node_parameters_unset_until_update_nodes():
    root = mixed_circuit()
    nodes = pc.topological_order(root)
    first, second = pc.Circuit(root, seed=1), pc.Circuit(root, seed=2)
    assert all(getattr(node, "params", None) is None for node in nodes)
    data = all_assignments([3, 3, 3])
    assert not torch.allclose(first.log_likelihood(data), second.log_likelihood(data))   # each its own draw
    first.update_nodes()
    assert all(node.params is not None for node in nodes if not isinstance(node, pc.ProductNodes))
    torch.testing.assert_close(pc.Circuit(root, seed=2).log_likelihood(data), first.log_likelihood(data))


def test_user_parameters_are_kept_and_not_copied_back():
    weights = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    root = pc.summation([pc.inputs(0, 1, 2, torch.tensor([[0.9, 0.1]])), pc.inputs(0, 1, 2)], 1, weights)
    circuit = pc.Circuit(root, dtype=torch.float64)
    torch.testing.assert_close(circuit.node_parameters(root), weights[0:1])
    assert root.children[1].params is None
    circuit.set_parameters({name: group.values * 0 + 0.5 for name, group in circuit.parameter_groups().items()})
    assert torch.equal(root.params, weights)


def test_default_names_are_deterministic_and_free_of_global_state():
    def build():
        return [node.name for node in pc.topological_order(mixed_circuit())]
    assert build() == build()
    assert pc.summation(pc.multiply(*[pc.inputs(v, 2) for v in range(6)]), 1).name == "sum{0,1,2,...,5}"
    assert pc.inputs(3, 2).name == "input{3}" and pc.inputs(3, 2, name="x3").name == "x3"


def test_plan_is_named_and_layers_alternate_products_and_sums():
    root = mixed_circuit()
    plan = plan_layers(root, seed=0, dtype=torch.float64, device=torch.device("cpu"))
    assert isinstance(plan, LayerPlan)
    assert [type(layer) for layer in plan.layers] == [ProductLayer, SumLayer, ProductLayer, SumLayer, SumLayer]
    assert plan.sum_groups == [group for layer in plan.layers if isinstance(layer, SumLayer) for group in layer.groups]
    rows = sorted((plan.node_rows[node], node.num_units) for node in pc.topological_order(root))
    assert rows[0][0] == 1 and plan.num_rows == rows[-1][0] + rows[-1][1]                   # row 0 is padding
    assert all(start + units == following for (start, units), (following, _) in zip(rows, rows[1:]))


def test_hclt_infers_num_categories_from_data():
    data = correlated_data()
    three = torch.where(data[:, :1] == 1, 2, data[:, :1])
    data = torch.cat([three, data[:, 1:]], dim=1)
    inferred = pc.Circuit(hclt(data, 2), seed=0, dtype=torch.float64)
    explicit = pc.Circuit(hclt(data, 2, 3), seed=0, dtype=torch.float64)
    assert inferred.num_categories.tolist() == [3] * 5
    torch.testing.assert_close(inferred.log_likelihood(data), explicit.log_likelihood(data), rtol=0, atol=0)
    assert pc.Circuit(hclt(data, 2, 4)).num_categories.tolist() == [4] * 5          # explicit values still win


@pytest.mark.parametrize("data, message", [(torch.zeros(5, 3, dtype=torch.long), "every value in data is 0"),
                                           (torch.rand(5, 3), "pass num_categories"),
                                           (torch.zeros(0, 3, dtype=torch.long), "non-empty")])
def test_hclt_refuses_data_it_cannot_infer_categories_from(data, message):
    with pytest.raises(ValueError, match=message):
        hclt(data, 2)
