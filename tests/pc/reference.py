"""Independent references for hmmlvd.pc: per-unit log-space evaluation and brute-force enumeration."""
from __future__ import annotations

import itertools

import torch

from hmmlvd.pc import InputNodes, ProductNodes, topological_order


def naive_log_likelihood(root, x_row: list[int], params: dict) -> torch.Tensor:
    """log p(x) of one example, unit by unit; ``params[node_id]`` are the node's parameter tensors."""
    values = {}
    for node in topological_order(root):
        if isinstance(node, InputNodes):
            value = x_row[node.variable]
            units = [params[node.node_id][u, value].log() if value >= 0 else torch.zeros((), dtype=torch.float64)
                     for u in range(node.num_units)]
        elif isinstance(node, ProductNodes):
            units = [sum(values[child.node_id][int(node.edges[u, i])] for i, child in enumerate(node.children))
                     for u in range(node.num_units)]
        else:
            children = torch.cat([values[child.node_id] for child in node.children])
            units = [torch.logsumexp(params[node.node_id][u].log() + children, 0) for u in range(node.num_units)]
        values[node.node_id] = torch.stack(units)
    return values[root.node_id][0]


def circuit_params(circuit, root, requires_grad: bool = False) -> dict:
    """The compiled parameters of every parametrised node, as float64 leaf tensors."""
    result = {}
    for node in topological_order(root):
        if not isinstance(node, ProductNodes):
            result[node.node_id] = circuit.node_parameters(node).detach().double().clone().requires_grad_(requires_grad)
    return result


def naive_counts(circuit, root, data: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(log p per example, expected counts per node) with counts = θ · ∂ Σ log p / ∂θ by autograd."""
    params = circuit_params(circuit, root, requires_grad=True)
    logs = torch.stack([naive_log_likelihood(root, row, params) for row in data.tolist()])
    logs.sum().backward()
    return logs.detach(), {node_id: (p * p.grad).detach() for node_id, p in params.items()}


def all_assignments(num_categories: list[int]) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*[range(k) for k in num_categories])), dtype=torch.long)
