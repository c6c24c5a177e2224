"""Layered tensors of a compiled circuit, and the plan that groups nodes into them.

Every unit of the circuit gets one row of a value buffer ``[num_rows, batch]``; row 0 is the
constant 1 (log 0) used to pad product fan-ins. Nodes are assigned a depth (inputs 0, others
1 + deepest child); each depth becomes a product layer followed by sum groups, one group per
sum shape ``(num_units, num_child_units)`` so that a whole group is one batched matmul.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .input_layers import CategoricalInputGroup, GaussianInputGroup
from .nodes import CategoricalInputNodes, GaussianInputNodes, InputNodes, Node, ProductNodes, SumNodes
from .nodes import topological_order

InputGroup = CategoricalInputGroup | GaussianInputGroup


@dataclass
class ProductLayer:
    """Product units in rows ``start : start + len(child_rows)``; ``child_rows`` [P, max fan-in], 0-padded."""

    start: int
    child_rows: Tensor
    nodes: list[ProductNodes]


@dataclass
class SumGroup:
    """``n`` sum nodes of identical shape: rows ``start : start + n * U``, params ``[n, U, C]``."""

    start: int
    child_rows: Tensor       # [n, C]
    params: Tensor           # [n, U, C]
    nodes: list[SumNodes]

    @property
    def num_units(self) -> int:
        return self.params.shape[1]


def _depths(order: list[Node]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for node in order:
        depth[node.node_id] = 1 + max((depth[c.node_id] for c in node.children), default=-1)
    return depth


def _random_parameters(node: Node, generator: torch.Generator) -> Tensor:
    """Random categorical rows, or for Gaussian units means from N(0, 1) and unit standard deviations."""
    shape = tuple(node.params_shape())
    if isinstance(node, GaussianInputNodes):
        return torch.stack([torch.randn(shape[0], generator=generator, dtype=torch.float64),
                            torch.ones(shape[0], dtype=torch.float64)], dim=1)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.05
    return values / values.sum(-1, keepdim=True)


def plan_layers(root: Node, *, seed: int, dtype: torch.dtype, device: torch.device):
    """Group the nodes under ``root`` into input groups and alternating product/sum layers.

    Returns ``(input_groups, layers, node_rows, num_rows)`` where ``layers`` is a list of
    ``ProductLayer`` / ``list[SumGroup]`` in evaluation order and ``node_rows[node_id]`` is the
    first buffer row of that node. Missing parameters are drawn at random from ``seed``.
    """
    order = topological_order(root)
    depth = _depths(order)
    generator = torch.Generator().manual_seed(seed)
    node_rows: dict[int, int] = {}
    next_row = 1

    def place(node: Node) -> int:
        nonlocal next_row
        node_rows[node.node_id] = next_row
        next_row += node.num_units
        return node_rows[node.node_id]

    def params_of(node) -> Tensor:
        if node.params is None:
            node.params = _random_parameters(node, generator)
        return node.params.to(device=device, dtype=dtype)

    input_groups: list[InputGroup] = []
    by_kind: dict[tuple[int, bool], list[InputNodes]] = {}
    for node in order:
        if isinstance(node, InputNodes):
            categories = node.num_categories if isinstance(node, CategoricalInputNodes) else 0   # 0 = Gaussian
            by_kind.setdefault((categories, node.fixed), []).append(node)
    for (categories, fixed), nodes in sorted(by_kind.items()):
        start = next_row
        for node in nodes:
            place(node)
        variables = torch.cat([torch.full((n.num_units,), n.variable, dtype=torch.long) for n in nodes]).to(device)
        params = torch.cat([params_of(n) for n in nodes])
        if categories:
            input_groups.append(CategoricalInputGroup(start, variables, params, fixed, nodes))
        else:
            min_std = torch.cat([torch.full((n.num_units,), n.min_std) for n in nodes]).to(device=device, dtype=dtype)
            input_groups.append(GaussianInputGroup(start, variables, params, min_std, fixed, nodes))

    layers: list = []
    levels: dict[int, list[Node]] = {}
    for node in order:
        levels.setdefault(depth[node.node_id], []).append(node)
    for level in range(1, max(levels) + 1):
        at_level = levels.get(level, [])
        products = [node for node in at_level if isinstance(node, ProductNodes)]
        if products:
            start = next_row
            fan_in = max(len(node.children) for node in products)
            rows = []
            for node in products:
                place(node)
                child_starts = torch.tensor([node_rows[c.node_id] for c in node.children])
                block = torch.zeros(node.num_units, fan_in, dtype=torch.long)
                block[:, :len(node.children)] = node.edges + child_starts
                rows.append(block)
            layers.append(ProductLayer(start, torch.cat(rows).to(device), products))
        shapes: dict[tuple[int, int], list[SumNodes]] = {}
        for node in at_level:
            if isinstance(node, SumNodes):
                shapes.setdefault((node.num_units, node.num_child_units), []).append(node)
        groups = []
        for nodes in shapes.values():
            start = next_row
            child_rows = []
            for node in nodes:
                place(node)
                child_rows.append(torch.cat([torch.arange(c.num_units) + node_rows[c.node_id] for c in node.children]))
            groups.append(SumGroup(start, torch.stack(child_rows).to(device),
                                   torch.stack([params_of(n) for n in nodes]), nodes))
        if groups:
            layers.append(groups)
    return input_groups, layers, node_rows, next_row
