"""Latent materialisation (Peharz et al., 2016; paper Algorithm 1).

For a scope ``S``, the latent ``Z_S`` picks which child of the sum units with scope ``S`` is used:
the ``k``-th child unit of every such sum is multiplied by a fixed indicator input ``[Z_S = k]``.
The result is a circuit over ``(x, z)`` whose marginal over ``z`` is the original circuit, and that
shares its parameters: input nodes are the same objects, sum nodes are copied back with
:meth:`MaterializedCircuit.copy_to_original`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .nodes import InputNodes, Node, ProductNodes, SumNodes, inputs, multiply, summation, topological_order


@dataclass
class MaterializedCircuit:
    """A circuit over ``num_observed`` observed variables followed by one latent per scope."""

    root: Node
    original_root: Node
    scopes: list[frozenset[int]]
    latent_variables: list[int]              # variable id of Z_S, in the order of ``scopes``
    latent_sizes: list[int]                  # number of categories of Z_S
    sum_sources: list[tuple[SumNodes, SumNodes]] = field(default_factory=list)   # (new, original)

    def augment(self, x: Tensor, z: Tensor) -> Tensor:
        """``[B, num_observed + num_latents]``: observed data ``x`` followed by latent assignments ``z``
        (``-1`` = unassigned; float ``x``, for circuits with Gaussian inputs, gets NaN there instead)."""
        if z.dim() != 2 or z.shape[1] != len(self.scopes) or z.shape[0] != x.shape[0]:
            raise ValueError(f"z must have shape [{x.shape[0]}, {len(self.scopes)}] (one column per scope), "
                             f"got {tuple(z.shape)}")
        z = z.to(x.device)
        if x.dtype.is_floating_point:
            return torch.cat([x, z.to(x.dtype).masked_fill(z < 0, float("nan"))], dim=1)
        return torch.cat([x.long(), z.long()], dim=1)

    def copy_to_original(self, circuit=None) -> None:
        """Give the original nodes the parameters of the materialised circuit.

        ``circuit`` is the compiled materialised circuit (its trained parameters are written into the
        nodes first); without it the nodes' current parameters are used.
        """
        if circuit is not None:
            if circuit.root is not self.root:
                raise ValueError("circuit was not compiled from this materialised root")
            circuit.update_nodes()
        for new, original in self.sum_sources:
            original.params = new.params.detach().clone()


def materialize(root: Node, scopes: list[set[int] | frozenset[int]]) -> MaterializedCircuit:
    """Materialise one latent variable per scope in ``scopes`` (each must be the scope of some sum nodes).

    Latent ``i`` becomes variable ``max(root.scope) + 1 + i``; its categories index the concatenated
    children of the sum nodes with that scope (which must all have the same number of child units).
    """
    scopes = [frozenset(scope) for scope in scopes]
    if len(set(scopes)) != len(scopes):
        raise ValueError("scopes must be distinct")
    order = topological_order(root)
    first_latent = max(root.scope) + 1
    sizes: dict[frozenset[int], int] = {}
    for node in order:
        if isinstance(node, SumNodes) and node.scope in scopes:
            if sizes.setdefault(node.scope, node.num_child_units) != node.num_child_units:
                raise ValueError(f"sum nodes with scope {sorted(node.scope)[:8]} have different numbers of "
                                 f"children ({sizes[node.scope]} and {node.num_child_units} at {node!r}); "
                                 "their latent would have no single meaning")
    for scope in scopes:
        if scope not in sizes:
            raise ValueError(f"no sum node has scope {sorted(scope)[:8]}{'...' if len(scope) > 8 else ''}; "
                             "materialise scopes of existing sum nodes")
    latent_of = {scope: first_latent + index for index, scope in enumerate(scopes)}
    result = MaterializedCircuit(root, root, scopes, [latent_of[s] for s in scopes], [sizes[s] for s in scopes])
    replaced: dict[Node, Node] = {}
    for node in order:
        children = tuple(replaced.get(child, child) for child in node.children)
        if isinstance(node, InputNodes):
            continue
        if isinstance(node, ProductNodes):
            if children != node.children:
                replaced[node] = multiply(*children, edges=node.edges, name=node.name)
            continue
        if node.scope in latent_of:
            children = _with_indicators(children, latent_of[node.scope], sizes[node.scope], node.name)
        if children != node.children:
            try:
                new = summation(children, node.num_units, node.params, name=node.name)
            except ValueError as error:
                raise ValueError(f"materialising {[sorted(s)[:8] for s in scopes]} breaks smoothness ({error}); "
                                 "choose scopes that every path through the circuit passes through") from None
            replaced[node] = new
            result.sum_sources.append((new, node))
    result.root = replaced.get(root, root)
    return result


def _with_indicators(children: tuple[Node, ...], latent: int, size: int, name: str) -> tuple[Node, ...]:
    """Multiply child unit ``k`` (counting over the concatenated children) by ``[Z = k]``."""
    wrapped, offset = [], 0
    for child in children:
        one_hot = torch.zeros(child.num_units, size, dtype=torch.float64)
        one_hot[torch.arange(child.num_units), torch.arange(offset, offset + child.num_units)] = 1.0
        indicator = inputs(latent, child.num_units, size, one_hot, fixed=True, name=f"[z{latent}]@{name}")
        wrapped.append(multiply(child, indicator, name=f"{child.name}&z{latent}"))
        offset += child.num_units
    return tuple(wrapped)
