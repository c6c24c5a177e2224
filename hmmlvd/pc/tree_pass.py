"""Vectorised passes over many hidden Chow–Liu trees of one shape at once (log space).

A tree over ``D`` variables with hidden size ``H``: variable ``v`` has a hidden state ``h_v`` and a leaf
factor ``leaf[v, h_v]`` (a log value given by the caller); every non-root ``v`` has a transition
``p(h_v | h_parent(v))`` and the root a prior ``p(h_root)``. ``G`` trees share the structure and each has
its own parameters; values are laid out ``[G, D, M, H]`` for ``M`` columns (examples) per tree. The upward
pass runs level by level (leaves first), one batched GEMM per level; the downward pass gives the flows
(posterior marginals of every hidden state) and the expected counts of every parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TreePlan:
    """The levels of a rooted tree: ``levels[h] = (nodes, transition rows, parents)`` of the non-root nodes of
    height ``h`` (leaves first). Transitions are stored for the non-root nodes in increasing id order."""

    parents: tuple[int, ...]
    root: int
    levels: tuple[tuple[Tensor, Tensor, Tensor], ...]

    @property
    def num_nodes(self) -> int:
        return len(self.parents)


def check_tree(parents) -> tuple[int, ...]:
    """``parents`` as a tuple after checking it is one rooted tree (exactly one ``-1``, no cycles)."""
    parents = tuple(int(p) for p in parents)
    num_nodes = len(parents)
    roots = [v for v, p in enumerate(parents) if p == -1]
    if num_nodes == 0 or len(roots) != 1 or any(p < -1 or p >= num_nodes or p == v for v, p in enumerate(parents)):
        raise ValueError(f"parents must describe one rooted tree (one -1 entry, the others node ids), got {parents}")
    for start in range(num_nodes):
        node, steps = start, 0
        while parents[node] != -1:
            node, steps = parents[node], steps + 1
            if steps > num_nodes:
                raise ValueError(f"parents {parents} contain a cycle")
    return parents


def plan_tree(parents, device: str | torch.device = "cpu") -> TreePlan:
    """The :class:`TreePlan` of the tree given by ``parents`` (``-1`` for the root)."""
    parents = check_tree(parents)
    height = [0] * len(parents)
    changed = True
    while changed:                                   # heights settle after at most D sweeps
        changed = False
        for node, parent in enumerate(parents):
            if parent >= 0 and height[parent] < height[node] + 1:
                height[parent], changed = height[node] + 1, True
    root = parents.index(-1)
    row = {node: index for index, node in enumerate(v for v in range(len(parents)) if v != root)}
    levels = []
    for level in range(max(height) + 1):
        nodes = [v for v in range(len(parents)) if height[v] == level and v != root]
        if nodes:
            levels.append(tuple(torch.tensor(ids, dtype=torch.long, device=device)
                                for ids in (nodes, [row[v] for v in nodes], [parents[v] for v in nodes])))
    return TreePlan(parents, root, tuple(levels))


@dataclass
class TreePass:
    """What the upward pass leaves for the downward one.

    ``values[g, v, m, h]`` is the log value of the subtree of ``v`` given ``h_v = h`` (leaf plus the messages
    of its children); ``level_sums``/``level_shifts`` the (shifted) message sums of each level.
    """

    values: Tensor
    level_sums: list[Tensor]        # [G, n, M, H_parent]
    level_shifts: list[Tensor]      # [G, n, M, 1]
    root_probs: Tensor              # [G, M, H]
    root_sums: Tensor               # [G, M]
    log_likelihood: Tensor          # [G, M]


def _shifted_exp(values: Tensor) -> tuple[Tensor, Tensor]:
    shift = values.amax(-1, keepdim=True)
    return torch.exp(values - shift), shift


def upward(plan: TreePlan, leaf: Tensor, transitions: Tensor, root_weights: Tensor) -> TreePass:
    """Log-likelihood ``[G, M]`` of ``G`` trees: ``leaf`` ``[G, D, M, H]`` (overwritten with the values),
    ``transitions`` ``[G, D-1, H_parent, H_child]``, ``root_weights`` ``[G, H]``."""
    tiny = torch.finfo(leaf.dtype).tiny
    values, sums_per_level, shifts = leaf, [], []
    for nodes, rows, parents in plan.levels:
        probs, shift = _shifted_exp(values.index_select(1, nodes))                    # [G, n, M, H]
        weights = transitions.index_select(1, rows)                                     # [G, n, Hp, Hc]
        sums = torch.matmul(probs, weights.transpose(-1, -2)).clamp_min_(tiny)          # [G, n, M, Hp]
        values.index_add_(1, parents, sums.log() + shift)
        sums_per_level.append(sums)
        shifts.append(shift)
    root_probs, root_shift = _shifted_exp(values[:, plan.root])                         # [G, M, H]
    root_sums = torch.matmul(root_probs, root_weights[:, :, None])[..., 0].clamp_min_(tiny)
    return TreePass(values, sums_per_level, shifts, root_probs, root_sums, root_sums.log() + root_shift[..., 0])


def downward(plan: TreePlan, forward: TreePass, transitions: Tensor, root_weights: Tensor, root_flows: Tensor, *,
             transition_counts: Tensor | None = None, root_counts: Tensor | None = None) -> Tensor:
    """Flows ``[G, D, M, H]`` (``root_flows[g, m]`` times the posterior of every hidden state); adds the
    expected counts into ``transition_counts`` ``[G, D-1, H, H]`` and ``root_counts`` ``[G, H]`` when given."""
    values = forward.values
    flows = torch.zeros_like(values)
    top = forward.root_probs * root_weights[:, None, :] * (root_flows / forward.root_sums)[..., None]
    flows[:, plan.root] = top
    if root_counts is not None:
        root_counts += top.sum(1)
    for (nodes, rows, parents), sums, shift in zip(reversed(plan.levels), reversed(forward.level_sums),
                                                    reversed(forward.level_shifts)):
        ratio = flows.index_select(1, parents) / sums                                   # [G, n, M, Hp]
        probs = torch.exp(values.index_select(1, nodes) - shift)                        # [G, n, M, Hc]
        weights = transitions.index_select(1, rows)
        flows.index_copy_(1, nodes, probs * torch.matmul(ratio, weights))
        if transition_counts is not None:
            transition_counts.index_add_(1, rows, weights * torch.matmul(ratio.transpose(-1, -2), probs))
    return flows


def sample_categorical(logits: Tensor, generator: torch.Generator) -> Tensor:
    """One draw ∝ ``exp(logits)`` along the last dim (Gumbel-max; the noise comes from the CPU ``generator``)."""
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64).clamp_min_(1e-300)
    gumbel = -torch.log(-torch.log(uniform))
    return (logits + gumbel.to(device=logits.device, dtype=logits.dtype)).argmax(-1)


def sample_states(plan: TreePlan, forward: TreePass, transitions: Tensor, root_weights: Tensor,
                  generator: torch.Generator) -> Tensor:
    """Hidden states ``[G, D, M]`` drawn from their posterior given the leaves of the upward pass."""
    tiny = torch.finfo(forward.values.dtype).tiny
    values = forward.values
    groups, num_nodes, columns, hidden = values.shape
    states = torch.zeros(groups, num_nodes, columns, dtype=torch.long, device=values.device)
    states[:, plan.root] = sample_categorical(root_weights.clamp_min(tiny).log()[:, None] + values[:, plan.root],
                                              generator)
    for nodes, rows, parents in reversed(plan.levels):
        parent_states = states.index_select(1, parents)                                 # [G, n, M]
        log_weights = transitions.index_select(1, rows).clamp_min(tiny).log()           # [G, n, Hp, Hc]
        chosen_rows = torch.gather(log_weights, 2, parent_states[..., None].expand(-1, -1, -1, hidden))
        states[:, nodes] = sample_categorical(chosen_rows + values.index_select(1, nodes), generator)
    return states


def max_upward(plan: TreePlan, leaf: Tensor, transitions: Tensor, root_weights: Tensor) -> tuple[Tensor, Tensor]:
    """The max-product counterpart of :func:`upward` (log space).

    ``leaf`` ``[G, D, M, H]`` (log factors, overwritten) becomes ``values[g, v, m, h]``, the best log value of the
    subtree of ``v`` given ``h_v = h`` (max over the hidden states below ``v``); ``transitions``
    ``[G, D-1, H_parent, H_child]``, ``root_weights`` ``[G, H]``. Returns ``(values, best)``, ``best`` ``[G, M]`` the
    max over every hidden state of the tree. Each level holds a ``[G, n, M, H, H]`` temporary (n nodes in it).
    """
    tiny = torch.finfo(leaf.dtype).tiny
    log_transitions = transitions.clamp_min(tiny).log()
    values = leaf
    for nodes, rows, parents in plan.levels:
        below = values.index_select(1, nodes)[:, :, :, None, :]                        # [G, n, M, 1, Hc]
        weights = log_transitions.index_select(1, rows)[:, :, None]                    # [G, n, 1, Hp, Hc]
        values.index_add_(1, parents, (below + weights).amax(-1))                      # [G, n, M, Hp]
    top = root_weights.clamp_min(tiny).log()[:, None, :] + values[:, plan.root]        # [G, M, H]
    return values, top.amax(-1)


def argmax_states(plan: TreePlan, values: Tensor, transitions: Tensor, root_weights: Tensor) -> Tensor:
    """The hidden states ``[G, D, M]`` of the best completion, root first, from the ``values`` ``[G, D, M, H]`` of
    :func:`max_upward` (same ``transitions`` and ``root_weights``); ties go to the lowest state."""
    tiny = torch.finfo(values.dtype).tiny
    log_transitions = transitions.clamp_min(tiny).log()                                 # [G, D-1, Hp, Hc]
    groups, num_nodes, columns, hidden = values.shape
    states = torch.empty(groups, num_nodes, columns, dtype=torch.long, device=values.device)
    states[:, plan.root] = (root_weights.clamp_min(tiny).log()[:, None] + values[:, plan.root]).argmax(-1)
    for nodes, rows, parents in reversed(plan.levels):
        above = states.index_select(1, parents)[..., None].expand(-1, -1, -1, hidden)  # [G, n, M, Hc]
        scores = torch.gather(log_transitions.index_select(1, rows), 2, above) + values.index_select(1, nodes)
        states[:, nodes] = scores.argmax(-1)
    return states
