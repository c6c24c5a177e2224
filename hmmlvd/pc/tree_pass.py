"""Vectorised passes over many hidden Chow–Liu trees of one shape at once (scaled probability space).

A tree over ``D`` variables with hidden size ``H``: variable ``v`` has a hidden state ``h_v`` and a leaf
factor ``leaf[v, h_v]`` (a probability given by the caller, 1 for a missing value); every non-root ``v`` has a
transition ``p(h_v | h_parent(v))`` and the root a prior ``p(h_root)``. ``G`` trees share the structure and each
has its own parameters; values are laid out ``[G, D, M, H]`` for ``M`` columns (examples) per tree.

As in the HMM engine (:mod:`hmmlvd.hmm.inference`), the passes run in probability space: the upward pass visits
the nodes children first, sends one batched GEMM ``[G, M, H] @ [G, H, H]`` from each node to its parent and divides
the node's value and its message by the message's largest entry (keeping the log of these scales, so no exp or log
per element). Every message then peaks at 1, so a node multiplying the messages of many children (a star-shaped
tree, say) neither overflows nor drifts towards zero as each message's sum would make it (``H^-n`` for ``n``
children); only children that disagree on every state of their parent shrink its product. The root's value is
divided by its sum. The downward pass
gives the flows (posterior marginals of every hidden state) and the expected counts with two more GEMMs per node.
Every node's values are one ``[G, M, H]`` slice of the buffer, so nothing is gathered or copied per node.

Leaves may be given as rows of a table (:class:`Leaves`, the patch circuits' emissions): the upward pass gathers
them and the downward pass adds their flows into counts of the table's shape.

On the CPU, :func:`upward` and :func:`downward` over float32 or float64 trees run the C kernel of
:mod:`.tree_kernel` when it is available (same math and results, to rounding; each node's steps fused over a
block of columns). The kernel keeps no messages: the message node ``v`` sent is ``values[:, v] @ w_vᵀ``, which
the downward pass recomputes, a third more arithmetic for not writing and reading back a buffer as large as the
values (``TreePass.messages`` is then None). Elsewhere, and with ``HMMLVD_KERNELS=0``, the torch code below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import tree_kernel


@dataclass(frozen=True)
class TreePlan:
    """A rooted tree: ``order`` lists the non-root nodes children first (by height, then id); ``rows[v]`` is the
    transition row of non-root node ``v`` (transitions are stored for the non-root nodes in increasing id order)."""

    parents: tuple[int, ...]
    root: int
    order: tuple[int, ...]
    rows: tuple[int, ...]

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
    """The :class:`TreePlan` of the tree given by ``parents`` (``-1`` for the root); ``device`` is unused (the
    plan holds Python ints only) and kept for the callers' convenience."""
    del device
    parents = check_tree(parents)
    height = [0] * len(parents)
    changed = True
    while changed:                                   # heights settle after at most D sweeps
        changed = False
        for node, parent in enumerate(parents):
            if parent >= 0 and height[parent] < height[node] + 1:
                height[parent], changed = height[node] + 1, True
    root = parents.index(-1)
    non_root = [v for v in range(len(parents)) if v != root]
    rows = [-1] * len(parents)
    for index, node in enumerate(non_root):
        rows[node] = index
    order = tuple(sorted(non_root, key=lambda v: (height[v], v)))
    return TreePlan(parents, root, order, tuple(rows))


@dataclass
class Workspace:
    """Buffers reused by the chunks of one call, or by the calls of one owner (a patch circuit keeps one). The CPU
    allocator hands large blocks back to the system, so a fresh buffer per chunk or call would be paid again in page
    faults; a pass given a workspace writes its large intermediates into it, and what it returns is valid until the
    next pass with the same workspace."""

    buffers: dict[str, Tensor] = field(default_factory=dict)

    def get(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised ``shape`` tensor of ``like``'s dtype and device, kept under ``name``."""
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self.buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buffer[:numel].view(shape)


def empty(workspace: Workspace | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """``workspace.get(name, shape, like)``, or a new tensor without a workspace."""
    if workspace is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return workspace.get(name, shape, like)


@dataclass(frozen=True)
class Leaves:
    """Leaf factors as rows of a table: tree ``g``'s leaf of node ``v`` at column ``m`` is ``table[trees[g], v,
    index[s, v, m]]`` (clamped at ``tiny``), or 1 where that index is ``-1`` (a missing value), with ``s = g // (G /
    S)`` the stack of tree g. ``table`` [T, D, K, H] (probabilities), ``index`` [S, D, M] (int64), ``trees`` [G]
    (int64; None: tree g reads entry g, and T = G)."""

    table: Tensor
    index: Tensor
    trees: Tensor | None = None

    def __post_init__(self):
        if (self.table.dim() != 4 or self.index.dim() != 3 or self.index.dtype != torch.int64
                or self.index.shape[1] != self.table.shape[1]
                or (self.trees is not None and (self.trees.dim() != 1 or self.trees.dtype != torch.int64))):
            raise ValueError(f"Leaves need a table [T, D, K, H], an int64 index [S, D, M] and int64 trees [G] or None, "
                             f"got {tuple(self.table.shape)}, {self.index.dtype} {tuple(self.index.shape)}, "
                             f"{None if self.trees is None else (self.trees.dtype, tuple(self.trees.shape))}")
        object.__setattr__(self, "index", self.index.contiguous())      # the kernel reads them as C arrays
        if self.trees is not None:
            object.__setattr__(self, "trees", self.trees.contiguous())

    def rows(self, groups: int) -> Tensor:
        """The table row ``[G·D·M]`` of every leaf of ``groups`` trees, in the table viewed as [T·D·K, H]."""
        entries, nodes, categories, _ = self.table.shape
        stacks = self.index.shape[0]
        trees = self.trees if self.trees is not None else torch.arange(groups, device=self.index.device)
        base = trees.view(stacks, -1, 1, 1) * nodes + torch.arange(nodes, device=self.index.device).view(-1, 1)
        return (base * categories + self.index.clamp_min(0)[:, None]).reshape(-1)

    def missing(self) -> Tensor | None:
        """The mask [S, D, M] of missing values, None when none is."""
        missing = self.index < 0
        return missing if bool(missing.any()) else None

    def gather(self, out: Tensor) -> Tensor:
        """The leaves written into ``out`` [G, D, M, H] (contiguous), in torch."""
        hidden = self.table.shape[-1]
        torch.index_select(self.table.reshape(-1, hidden), 0, self.rows(len(out)), out=out.view(-1, hidden))
        out.clamp_min_(torch.finfo(out.dtype).tiny)
        missing = self.missing()
        if missing is not None:
            out.view(missing.shape[0], -1, *out.shape[1:]).masked_fill_(missing[:, None, ..., None], 1.0)
        return out

    def scatter(self, flows: Tensor, counts: Tensor) -> None:
        """Add the flows [G, D, M, H] of the observed leaves into ``counts`` (the table's shape), in torch; the flows
        of missing leaves are set to zero first (in place)."""
        hidden = self.table.shape[-1]
        missing = self.missing()
        if missing is not None:
            flows.view(missing.shape[0], -1, *flows.shape[1:]).masked_fill_(missing[:, None, ..., None], 0.0)
        counts.view(-1, hidden).index_add_(0, self.rows(len(flows)), flows.reshape(-1, hidden))


@dataclass
class TreePass:
    """What the upward pass leaves for the downward one.

    ``values[g, v, m]`` is the value of the subtree of ``v`` given ``h_v`` (leaf times the messages of its
    children), scaled; ``messages[j]`` ``[G, M, H_parent]`` is what the node ``v = plan.order[j]`` sent to its
    parent, ``Σ_h p(h | h_parent) values[:, v, :, h]``. Only the torch code keeps the messages; after the C kernel
    they are None (the downward pass recomputes them from the values).
    """

    values: Tensor | None           # [G, D, M, H]; None where the kernel kept none (keep_values=False)
    messages: Tensor | list | None  # [D-1, G, M, H] or None; [] once the downward pass has used them
    root_sums: Tensor               # [G, M]: Σ_h p(h_root = h) values[:, root, :, h]
    log_likelihood: Tensor          # [G, M]
    leaves: Leaves | None = None    # the table rows the leaves came from, if they did


def _normalize(node: Tensor, sums: Tensor, tiny: float) -> None:
    """Divide ``node`` [G, M, H] by its sums over H, written into ``sums`` [G, M, 1] (clamped at ``tiny``)."""
    torch.sum(node, -1, keepdim=True, out=sums).clamp_min_(tiny)
    node.div_(sums)


def upward(plan: TreePlan, leaf: Tensor | Leaves, transitions: Tensor, root_weights: Tensor,
           log_scale: Tensor | None = None, workspace: Workspace | None = None,
           keep_values: bool = True) -> TreePass:
    """Log-likelihood ``[G, M]`` of ``G`` trees: ``leaf`` ``[G, D, M, H]`` (probabilities, overwritten with the
    values) or :class:`Leaves` (gathered into a new contiguous ``[G, D, M, H]`` buffer, or the ``workspace``'s),
    ``transitions`` ``[G, D-1, H_parent, H_child]``, ``root_weights`` ``[G, H]``; ``log_scale`` [G, M], when given,
    is added to the log-likelihood (the log of a factor the caller divided the leaves by).

    With :class:`Leaves` and ``keep_values=False`` (likelihoods only: no downward pass or sampling follows), where
    the C kernel runs no values are kept (``TreePass.values`` is None): each block of them lives in the core's
    caches while the pass runs over it, and no ``[G, D, M, H]`` buffer is written.

    The leaves must be positive (callers clamp them at ``tiny``): every value is then positive and so is every
    message (a transition row has a positive entry), so the downward pass never divides by zero."""
    leaves = leaf if isinstance(leaf, Leaves) else None
    groups, hidden = root_weights.shape
    if leaves is not None:
        shape = (groups, leaves.table.shape[1], leaves.index.shape[2], hidden)
        kernel = tree_kernel.supports(leaves.table, transitions, root_weights)
        values = None if kernel and not keep_values else empty(workspace, "values", shape, root_weights)
    else:
        values, shape = leaf, tuple(leaf.shape)
        kernel = tree_kernel.supports(values, transitions, root_weights)
    num_nodes, columns = shape[1], shape[2]
    if kernel:
        messages, root_sums = None, root_weights.new_empty(groups, columns)
        log_likelihood = root_weights.new_empty(groups, columns)                       # the log scales, first
        tree_kernel.upward(plan, values, log_likelihood, transitions.contiguous(), root_weights.contiguous(),
                           root_sums, leaves)
    else:
        messages = empty(workspace, "messages", (num_nodes - 1, groups, columns, hidden), values)
        sums = empty(workspace, "sums", (num_nodes, groups, columns, 1), root_weights)  # one row per node
        if leaves is not None:
            leaves.gather(values)
        root_sums = _torch_upward(plan, values, messages, sums, transitions, root_weights)
        log_likelihood = sums.log_().sum(0)[..., 0]
    log_likelihood += root_sums.log()
    if log_scale is not None:
        log_likelihood += log_scale
    return TreePass(values, messages, root_sums, log_likelihood, leaves)


def _torch_upward(plan: TreePlan, values: Tensor, messages: Tensor, sums: Tensor, transitions: Tensor,
                  root_weights: Tensor) -> Tensor:
    """:func:`upward` in torch ops: scales ``values`` in place, writes ``messages`` [D-1, G, M, H] and the scales
    ``sums`` [D, G, M, 1]; returns the root sums [G, M]."""
    tiny = torch.finfo(values.dtype).tiny
    for node, message, node_sums in zip(plan.order, messages, sums):
        below = values[:, node]                                                         # [G, M, Hc]
        weights = transitions[:, plan.rows[node]]                                       # [G, Hp, Hc]
        torch.bmm(below, weights.transpose(1, 2), out=message)                          # [G, M, Hp]
        torch.amax(message, -1, keepdim=True, out=node_sums).clamp_min_(tiny)
        message.div_(node_sums)
        below.div_(node_sums)
        values[:, plan.parents[node]].mul_(message)
    top = values[:, plan.root]
    _normalize(top, sums[-1], tiny)
    return torch.bmm(top, root_weights[:, :, None])[..., 0].clamp_min_(tiny)           # [G, M]


def downward(plan: TreePlan, forward: TreePass, transitions: Tensor, root_weights: Tensor, root_flows: Tensor, *,
             transition_counts: Tensor | None = None, root_counts: Tensor | None = None,
             leaf_counts: Tensor | None = None, workspace: Workspace | None = None) -> Tensor:
    """Flows ``[G, D, M, H]`` (``root_flows[g, m]`` times the posterior of every hidden state), written over
    ``forward.values`` (the pass cannot be used again); adds the expected counts into ``transition_counts``
    ``[G, D-1, H, H]`` and ``root_counts`` ``[G, H]`` when given, and, for leaves given as :class:`Leaves`, the
    flow of every observed leaf into ``leaf_counts`` (shaped like their table) when given (where that is done in
    torch, the flows of missing leaves are left at zero)."""
    values, leaves = forward.values, forward.leaves
    if values is None:
        raise ValueError("this upward pass kept no values (keep_values=False: likelihoods only); run it with "
                         "keep_values=True before a downward pass")
    if leaf_counts is not None and leaves is None:
        raise ValueError("leaf_counts needs a pass whose leaves were given as Leaves (table rows)")
    scales = root_flows / forward.root_sums                                             # [G, M]
    if tree_kernel.supports(values, transitions, root_weights):
        fused = leaf_counts if leaves is not None and leaves.trees is None else None
        own = [_accumulator(counts, values) for counts in (transition_counts, root_counts, fused)]
        tree_kernel.downward(plan, values, transitions.contiguous(), root_weights.contiguous(),
                             scales.to(values.dtype).contiguous(), *own[:2], leaves, own[2])
        for counts, accumulated in zip((transition_counts, root_counts, fused), own):
            if counts is not None and accumulated is not counts:
                counts += accumulated
        if leaf_counts is not None and fused is None:
            leaves.scatter(values, leaf_counts)
    else:
        _torch_downward(plan, forward, transitions, root_weights, scales, transition_counts, root_counts,
                        workspace)
        if leaf_counts is not None:
            leaves.scatter(values, leaf_counts)
    forward.messages = []
    return values


def _torch_downward(plan: TreePlan, forward: TreePass, transitions: Tensor, root_weights: Tensor, scales: Tensor,
                    transition_counts: Tensor | None, root_counts: Tensor | None,
                    workspace: Workspace | None) -> None:
    """:func:`downward` in torch ops, given the root flows over the root sums, ``scales`` [G, M]."""
    values, messages = forward.values, forward.messages
    back = empty(workspace, "back", values[:, 0].shape, values)
    top = values[:, plan.root]
    top.mul_(root_weights[:, None, :]).mul_(scales[..., None])
    if root_counts is not None:
        root_counts += top.sum(1)
    for j in reversed(range(len(plan.order))):
        node = plan.order[j]
        below = values[:, node]                                                         # [G, M, Hc]
        weights = transitions[:, plan.rows[node]]
        if messages is None:                                                            # a pass of the kernel
            message = torch.bmm(below, weights.transpose(1, 2), out=empty(workspace, "message", below.shape, values))
        else:
            message = messages[j]                                                       # a view, no copy
        ratio = torch.div(values[:, plan.parents[node]], message, out=message)          # [G, M, Hp]
        if transition_counts is not None:
            transition_counts[:, plan.rows[node]].addcmul_(weights, torch.bmm(ratio.transpose(1, 2), below))
        below.mul_(torch.bmm(ratio, weights, out=back))


def _accumulator(counts: Tensor | None, values: Tensor) -> Tensor | None:
    """``counts`` itself where the kernel can add into it (contiguous, ``values``' dtype), else zeros like it."""
    if counts is None or (counts.is_contiguous() and counts.dtype == values.dtype and counts.device == values.device):
        return counts
    return torch.zeros(counts.shape, dtype=values.dtype, device=values.device)


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
    top = root_weights[:, None, :] * values[:, plan.root]
    states[:, plan.root] = sample_categorical(top.clamp_min_(tiny).log_(), generator)
    for node in reversed(plan.order):
        parent_states = states[:, plan.parents[node]]                                   # [G, M]
        weights = transitions[:, plan.rows[node]]                                       # [G, Hp, Hc]
        chosen_rows = torch.gather(weights, 1, parent_states[..., None].expand(-1, -1, hidden))
        states[:, node] = sample_categorical((chosen_rows * values[:, node]).clamp_min_(tiny).log_(), generator)
    return states


def max_upward(plan: TreePlan, leaf: Tensor, transitions: Tensor, root_weights: Tensor) -> tuple[Tensor, Tensor]:
    """The max-product counterpart of :func:`upward` (log space).

    ``leaf`` ``[G, D, M, H]`` (log factors, overwritten) becomes ``values[g, v, m, h]``, the best log value of the
    subtree of ``v`` given ``h_v = h`` (max over the hidden states below ``v``); ``transitions``
    ``[G, D-1, H_parent, H_child]``, ``root_weights`` ``[G, H]``. Returns ``(values, best)``, ``best`` ``[G, M]`` the
    max over every hidden state of the tree. Each node holds a ``[G, M, H, H]`` temporary.
    """
    tiny = torch.finfo(leaf.dtype).tiny
    log_transitions = transitions.clamp_min(tiny).log()
    values = leaf
    for node in plan.order:
        below = values[:, node, :, None, :]                                             # [G, M, 1, Hc]
        weights = log_transitions[:, plan.rows[node], None]                             # [G, 1, Hp, Hc]
        values[:, plan.parents[node]] += (below + weights).amax(-1)                     # [G, M, Hp]
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
    for node in reversed(plan.order):
        above = states[:, plan.parents[node], :, None].expand(-1, -1, hidden)          # [G, M, Hc]
        scores = torch.gather(log_transitions[:, plan.rows[node]], 1, above) + values[:, node]
        states[:, node] = scores.argmax(-1)
    return states
