"""Circuit building blocks: nodes are vectors of units that share one scope.

A circuit is a DAG of three node kinds, each holding ``num_units`` units at once:

* :func:`inputs` – categorical input units over one variable (Bernoulli = 2 categories);
* :func:`gaussian_inputs` – univariate Gaussian input units over one real-valued variable;
* :func:`multiply` – product units; unit ``u`` multiplies unit ``edges[u, i]`` of child ``i``;
* :func:`summation` – sum units fully connected to the concatenated units of their children,
  with weights ``[num_units, total child units]`` whose rows sum to 1.

Scopes are computed on construction; decomposability (products) and smoothness (sums) are
checked there too, so an invalid circuit fails with a ``ValueError`` naming the node.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _scope_label(scope: frozenset[int]) -> str:
    """``{0,1,2}``, or ``{0,1,2,...,783}`` for a long scope."""
    variables = [str(v) for v in sorted(scope)]
    shown = variables if len(variables) <= 4 else [*variables[:3], "...", variables[-1]]
    return "{" + ",".join(shown) + "}"


class Node:
    """A vector of ``num_units`` units with a common scope (a frozenset of variable ids).

    Nodes are compared and hashed by identity. Without a ``name`` one is made from the node's kind
    and scope (e.g. ``sum{0,1,2}``); names label nodes in messages and files, they need not be unique.
    """

    kind = "node"

    def __init__(self, num_units: int, scope: frozenset[int], children: tuple["Node", ...], name: str | None):
        if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 1:
            raise ValueError(f"num_units must be a positive integer, got {num_units!r}")
        self.num_units = num_units
        self.scope = scope
        self.children = children
        self.name = name if name is not None else f"{self.kind}{_scope_label(scope)}"

    def __repr__(self) -> str:
        variables = sorted(self.scope)
        shown = variables if len(variables) <= 8 else variables[:8] + ["..."]
        return f"{self.name}(units={self.num_units}, scope={shown})"


class InputNodes(Node):
    """Base class of input units over one ``variable`` (no children)."""

    def __init__(self, variable: int, num_units: int, *, fixed: bool, name: str | None):
        if isinstance(variable, bool) or not isinstance(variable, int) or variable < 0:
            raise ValueError(f"variable must be a non-negative integer id, got {variable!r}")
        super().__init__(num_units, frozenset([variable]), (), name)
        self.variable = variable
        self.fixed = fixed


class CategoricalInputNodes(InputNodes):
    """Categorical input units: ``params[u, c] = p(x = c | unit u)``.

    ``fixed=True`` keeps the parameters out of EM (used for the indicator units of
    latent materialisation).
    """

    kind = "input"

    def __init__(self, variable: int, num_units: int, num_categories: int, params: Tensor | None = None,
                 *, fixed: bool = False, name: str | None = None):
        if isinstance(num_categories, bool) or not isinstance(num_categories, int) or num_categories < 1:
            raise ValueError(f"num_categories must be a positive integer, got {num_categories!r}")
        super().__init__(variable, num_units, fixed=fixed, name=name)
        self.num_categories = num_categories
        self.params = _check_distributions(params, self.params_shape(), self.name)

    def params_shape(self) -> tuple[int, int]:
        return (self.num_units, self.num_categories)


class GaussianInputNodes(InputNodes):
    """Univariate Gaussian input units: ``params[u] = (mean, std)``; EM keeps ``std >= min_std``."""

    kind = "gaussian"

    def __init__(self, variable: int, num_units: int, params: Tensor | None = None, *, min_std: float = 1e-3,
                 fixed: bool = False, name: str | None = None):
        if not isinstance(min_std, (int, float)) or isinstance(min_std, bool) or not min_std > 0:
            raise ValueError(f"min_std must be a positive number, got {min_std!r}")
        super().__init__(variable, num_units, fixed=fixed, name=name)
        self.min_std = float(min_std)
        self.params = _check_gaussians(params, self.params_shape(), self.name)

    def params_shape(self) -> tuple[int, int]:
        return (self.num_units, 2)


class ProductNodes(Node):
    """Product units: unit ``u`` multiplies unit ``edges[u, i]`` of ``children[i]``."""

    kind = "product"

    def __init__(self, children: tuple[Node, ...], edges: Tensor, name: str | None = None):
        scope: set[int] = set()
        for child in children:
            overlap = scope & child.scope
            if overlap:
                label = name or "product node"
                raise ValueError(
                    f"{label} is not decomposable: child {child!r} shares variables "
                    f"{sorted(overlap)[:8]} with an earlier child; children of a product must have "
                    "disjoint scopes")
            scope |= child.scope
        super().__init__(int(edges.shape[0]), frozenset(scope), children, name)
        self.edges = edges


class SumNodes(Node):
    """Sum units over the concatenated units of ``children``: ``params[u, c]`` = edge weight."""

    kind = "sum"

    def __init__(self, children: tuple[Node, ...], num_units: int, params: Tensor | None = None,
                 name: str | None = None):
        label = name or "sum node"
        for child in children[1:]:
            if child.scope != children[0].scope:
                raise ValueError(
                    f"{label} is not smooth: child {child!r} has a different scope from child "
                    f"{children[0]!r}; children of a sum must have identical scopes")
        super().__init__(num_units, children[0].scope, children, name)
        self.num_child_units = sum(child.num_units for child in children)
        self.params = _check_distributions(params, self.params_shape(), self.name)

    def params_shape(self) -> tuple[int, int]:
        return (self.num_units, self.num_child_units)


def _check_distributions(params: Tensor | None, shape: tuple[int, int], label: str) -> Tensor | None:
    if params is None:
        return None
    params = torch.as_tensor(params)
    if tuple(params.shape) != shape:
        raise ValueError(f"{label}: params must have shape {shape}, got {tuple(params.shape)}")
    if not torch.isfinite(params).all() or (params < 0).any():
        raise ValueError(f"{label}: params must be finite and non-negative")
    sums = params.double().sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise ValueError(f"{label}: each row of params must sum to 1 (got row sums in "
                         f"[{sums.min().item():.4g}, {sums.max().item():.4g}])")
    return params.detach().clone()


def _check_gaussians(params: Tensor | None, shape: tuple[int, int], label: str) -> Tensor | None:
    if params is None:
        return None
    params = torch.as_tensor(params)
    if tuple(params.shape) != shape:
        raise ValueError(f"{label}: params must have shape {shape} (mean, std per unit), got {tuple(params.shape)}")
    if not torch.isfinite(params).all() or (params[:, 1] <= 0).any():
        raise ValueError(f"{label}: Gaussian params must be finite with positive standard deviations (column 1)")
    return params.detach().clone()


def _check_children(children: tuple, what: str) -> tuple[Node, ...]:
    if len(children) == 1 and isinstance(children[0], (list, tuple)):
        children = tuple(children[0])
    if not children:
        raise ValueError(f"{what} needs at least one child node")
    for child in children:
        if not isinstance(child, Node):
            raise ValueError(f"{what} children must be nodes built by inputs/gaussian_inputs/multiply/summation, "
                             f"got {child!r}")
    return tuple(children)


def inputs(variable: int, num_units: int, num_categories: int = 2, params: Tensor | None = None,
           *, fixed: bool = False, name: str | None = None) -> CategoricalInputNodes:
    """``num_units`` categorical input units over ``variable`` (``params``: [num_units, num_categories])."""
    return CategoricalInputNodes(variable, num_units, num_categories, params, fixed=fixed, name=name)


def gaussian_inputs(variable: int, num_units: int, params: Tensor | None = None, *, min_std: float = 1e-3,
                    fixed: bool = False, name: str | None = None) -> GaussianInputNodes:
    """``num_units`` Gaussian input units over the real-valued ``variable`` (``params``: [num_units, 2] = mean, std).

    Without ``params`` the compiled circuit draws means from N(0, 1) and sets every std to 1.
    """
    return GaussianInputNodes(variable, num_units, params, min_std=min_std, fixed=fixed, name=name)


def multiply(*children: Node, edges: Tensor | None = None, name: str | None = None) -> ProductNodes:
    """Product units over children with disjoint scopes.

    Without ``edges`` the product is element-wise: all children have the same number of units
    ``n`` (children with one unit are broadcast) and unit ``u`` multiplies unit ``u`` of each.
    ``edges`` ([num_units, num_children] LongTensor) picks the child units explicitly; see
    :func:`outer_edges` for the cartesian product used by RAT-SPNs.
    """
    children = _check_children(children, "multiply")
    if edges is None:
        sizes = {child.num_units for child in children if child.num_units != 1} or {1}
        if len(sizes) > 1:
            raise ValueError(
                f"element-wise multiply needs children with equal numbers of units (or 1), got "
                f"{[child.num_units for child in children]}; pass edges= for other patterns")
        width = sizes.pop()
        edges = torch.stack([torch.arange(width) if child.num_units == width else torch.zeros(width, dtype=torch.long)
                             for child in children], dim=1)
    edges = torch.as_tensor(edges, dtype=torch.long)
    if edges.dim() != 2 or edges.shape[1] != len(children) or edges.shape[0] < 1:
        raise ValueError(f"edges must have shape [num_units, {len(children)}], got {tuple(edges.shape)}")
    limits = torch.tensor([child.num_units for child in children])
    if (edges < 0).any() or (edges >= limits).any():
        raise ValueError(f"edges index units outside the children (children have {limits.tolist()} units)")
    return ProductNodes(children, edges, name)


def outer_edges(*sizes: int) -> Tensor:
    """Edges of the cartesian product of children with ``sizes`` units: [prod(sizes), len(sizes)]."""
    grids = torch.meshgrid(*[torch.arange(size) for size in sizes], indexing="ij")
    return torch.stack([grid.reshape(-1) for grid in grids], dim=1)


def summation(children: Node | list[Node] | tuple[Node, ...], num_units: int, params: Tensor | None = None,
              *, name: str | None = None) -> SumNodes:
    """``num_units`` sum units, each connected to every unit of ``children`` (identical scopes)."""
    children = _check_children((children,) if isinstance(children, Node) else tuple(children), "summation")
    return SumNodes(children, num_units, params, name)


def topological_order(root: Node) -> list[Node]:
    """All nodes reachable from ``root``, children before parents (iterative, no recursion limit)."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.children) if child not in seen)
    return order
