"""Independent references for hmmlvd.pc: per-unit log-space evaluation and brute-force enumeration."""
from __future__ import annotations

import itertools
import math

import torch

from hmmlvd import pc
from hmmlvd.pc import CategoricalInputNodes, ProductNodes, topological_order


def naive_log_likelihood(root, x_row: list, params: dict, leaf_offsets: dict | None = None) -> torch.Tensor:
    """log p(x) of one example, unit by unit; ``params[node]`` are the node's parameter tensors.

    Entries of ``x_row`` that are -1 or NaN are missing. ``leaf_offsets[node]`` ([num_units]) is added
    to the log values of those input units (its gradient is their flow).
    """
    values = {}
    for node in topological_order(root):
        if isinstance(node, pc.InputNodes):
            value = x_row[node.variable]
            missing = math.isnan(value) or value < 0 and isinstance(node, CategoricalInputNodes)
            if missing:
                units = [torch.zeros((), dtype=torch.float64)] * node.num_units
            elif isinstance(node, CategoricalInputNodes):
                units = [params[node][u, int(value)].log() for u in range(node.num_units)]
            else:
                mean, std = params[node][:, 0], params[node][:, 1]
                units = list(torch.distributions.Normal(mean, std).log_prob(torch.tensor(float(value),
                                                                                         dtype=torch.float64)))
            if leaf_offsets is not None and node in leaf_offsets:
                units = [unit + leaf_offsets[node][u] for u, unit in enumerate(units)]
        elif isinstance(node, ProductNodes):
            units = [sum(values[child][int(node.edges[u, i])] for i, child in enumerate(node.children))
                     for u in range(node.num_units)]
        else:
            children = torch.cat([values[child] for child in node.children])
            units = [torch.logsumexp(params[node][u].log() + children, 0) for u in range(node.num_units)]
        values[node] = torch.stack(units)
    return values[root][0]


def circuit_params(circuit, root, requires_grad: bool = False) -> dict:
    """The compiled parameters of every parametrised node, as float64 leaf tensors."""
    result = {}
    for node in topological_order(root):
        if not isinstance(node, ProductNodes):
            result[node] = circuit.node_parameters(node).detach().double().clone().requires_grad_(requires_grad)
    return result


def naive_counts(circuit, root, data: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """(log p per example, expected counts per node) with counts = θ · ∂ Σ log p / ∂θ by autograd."""
    params = circuit_params(circuit, root, requires_grad=True)
    logs = torch.stack([naive_log_likelihood(root, row, params) for row in data.tolist()])
    logs.sum().backward()
    return logs.detach(), {node: (p * p.grad).detach() for node, p in params.items()}


def all_assignments(num_categories: list[int]) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*[range(k) for k in num_categories])), dtype=torch.long)


def mixed_circuit():
    """Shared nodes, a 3-way product, mixed fan-ins and a non-element-wise product."""
    a = [pc.inputs(v, 3, 3) for v in range(3)]
    left = pc.summation(pc.multiply(a[0], a[1]), 3)
    upper = pc.summation([pc.multiply(left, a[2]), pc.multiply(left, pc.inputs(2, 3, 3))], 2)
    b = [pc.inputs(v, 2, 3) for v in range(3)]
    flat = pc.multiply(b[0], b[1], b[2], edges=torch.tensor([[0, 1, 0], [1, 0, 1], [1, 1, 1]]))
    return pc.summation([upper, flat], 1)


def assert_cuda_matches_cpu(root, data: torch.Tensor, dtype: torch.dtype = torch.float64, tolerance: float = 1e-9):
    """The circuit under ``root`` compiled on CUDA gives the CPU's log-likelihoods and expected counts."""
    cpu, gpu = pc.Circuit(root, seed=1, dtype=dtype), pc.Circuit(root, seed=1, dtype=dtype, device="cuda")
    torch.testing.assert_close(gpu.log_likelihood(data).cpu(), cpu.log_likelihood(data), rtol=tolerance,
                               atol=tolerance)
    expected = cpu.expected_counts(data)
    for name, counts in gpu.expected_counts(data).items():
        torch.testing.assert_close(counts.cpu(), expected[name], rtol=10 * tolerance, atol=10 * tolerance)
    return gpu

