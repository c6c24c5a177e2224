"""Layered tensors of a compiled circuit, and the plan that groups nodes into them.

Every unit of the circuit gets one row of a value buffer ``[num_rows, batch]``; row 0 is the
constant 1 (log 0) used to pad product fan-ins. Nodes are assigned a depth (inputs 0, others
1 + deepest child); each depth becomes a product layer followed by a sum layer holding one group
per sum shape ``(num_units, num_child_units)``, so that a whole group is one batched matmul. Each
layer type evaluates itself in a given semiring (:mod:`hmmlvd.pc.semirings`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .input_layers import CategoricalInputGroup, GaussianInputGroup
from .nodes import CategoricalInputNodes, GaussianInputNodes, InputNodes, Node, ProductNodes, SumNodes
from .nodes import topological_order

InputGroup = CategoricalInputGroup | GaussianInputGroup


def gather_rows(values: Tensor, rows: Tensor) -> Tensor:
    """``values[rows]`` for a 2-D index (index_select is much faster than advanced indexing on CPU)."""
    return values.index_select(0, rows.reshape(-1)).reshape(*rows.shape, values.shape[1])


class Semiring(Protocol):
    """How a walk over the layers combines values (log space): see :mod:`hmmlvd.pc.semirings`."""

    def input_values(self, group: InputGroup, evidence) -> Tensor: ...

    def sum_values(self, group: "SumGroup", children: Tensor) -> Tensor: ...


@dataclass
class ProductLayer:
    """Product units in rows ``start : start + len(child_rows)``; ``child_rows`` [P, max fan-in], 0-padded."""

    start: int
    child_rows: Tensor
    nodes: list[ProductNodes]

    def evaluate(self, values: Tensor, semiring: Semiring) -> None:
        """Write the log values of the products (the sum of their children's, in every semiring)."""
        values[self.start:self.start + len(self.child_rows)] = gather_rows(values, self.child_rows).sum(1)


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

    @property
    def num_rows(self) -> int:
        return self.params.shape[0] * self.params.shape[1]


@dataclass
class SumLayer:
    """The sum nodes of one depth, in groups of identical shape (one batched matmul each)."""

    groups: list[SumGroup]

    def evaluate(self, values: Tensor, semiring: Semiring) -> None:
        """Write the log values of every group, combining its children ``[n, C, B]`` with ``semiring``."""
        for group in self.groups:
            combined = semiring.sum_values(group, gather_rows(values, group.child_rows))      # [n, U, B]
            values[group.start:group.start + group.num_rows] = combined.reshape(group.num_rows, -1)


Layer = ProductLayer | SumLayer


@dataclass
class LayerPlan:
    """A circuit's units laid out in buffer rows: input groups, then layers in evaluation order."""

    input_groups: list[InputGroup]
    layers: list[Layer]
    node_rows: dict[Node, int]       # node -> its first buffer row
    num_rows: int                    # rows of the value buffer, padding row 0 included
    sum_groups: list[SumGroup]       # the groups of every sum layer, in evaluation order


def _depths(order: list[Node]) -> dict[Node, int]:
    depth: dict[Node, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[c] for c in node.children), default=-1)
    return depth


def _random_parameters(node: Node, generator: torch.Generator) -> Tensor:
    """Random categorical rows, or for Gaussian units means from N(0, 1) and unit standard deviations."""
    shape = tuple(node.params_shape())
    if isinstance(node, GaussianInputNodes):
        return torch.stack([torch.randn(shape[0], generator=generator, dtype=torch.float64),
                            torch.ones(shape[0], dtype=torch.float64)], dim=1)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) + 0.05
    return values / values.sum(-1, keepdim=True)


def plan_layers(root: Node, *, seed: int, dtype: torch.dtype, device: torch.device) -> LayerPlan:
    """Group the nodes under ``root`` into input groups and alternating product/sum layers.

    Nodes without parameters get random ones drawn from ``seed`` in the compiled tensors only; the
    nodes themselves are left as they are.
    """
    order = topological_order(root)
    depth = _depths(order)
    generator = torch.Generator().manual_seed(seed)
    node_rows: dict[Node, int] = {}
    next_row = 1

    def place(node: Node) -> int:
        nonlocal next_row
        node_rows[node] = next_row
        next_row += node.num_units
        return node_rows[node]

    def params_of(node) -> Tensor:
        params = node.params if node.params is not None else _random_parameters(node, generator)
        return params.to(device=device, dtype=dtype)

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

    layers: list[Layer] = []
    sum_groups: list[SumGroup] = []
    levels: dict[int, list[Node]] = {}
    for node in order:
        levels.setdefault(depth[node], []).append(node)
    for level in range(1, max(levels) + 1):
        at_level = levels.get(level, [])
        products = [node for node in at_level if isinstance(node, ProductNodes)]
        if products:
            start = next_row
            fan_in = max(len(node.children) for node in products)
            rows = []
            for node in products:
                place(node)
                child_starts = torch.tensor([node_rows[c] for c in node.children])
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
                child_rows.append(torch.cat([torch.arange(c.num_units) + node_rows[c] for c in node.children]))
            groups.append(SumGroup(start, torch.stack(child_rows).to(device),
                                   torch.stack([params_of(n) for n in nodes]), nodes))
        if groups:
            layers.append(SumLayer(groups))
            sum_groups.extend(groups)
    return LayerPlan(input_groups, layers, node_rows, next_row, sum_groups)
