"""Hidden Chow–Liu trees (Liu & Van den Broeck, 2021): a Chow–Liu tree over the variables, one
hidden categorical of size ``num_latents`` per variable, categorical leaves."""
from __future__ import annotations

from collections import deque

import numpy as np
import torch
from scipy.sparse.csgraph import minimum_spanning_tree
from torch import Tensor

from ..nodes import Node, inputs, multiply, summation


def mutual_information(data: Tensor, num_categories: int, *, num_bins: int | None = None,
                       alpha: float = 0.01, chunk_size: int = 4096, block_bytes: int = 1 << 26) -> np.ndarray:
    """Pairwise mutual information ``[V, V]`` (nats) between the columns of ``data`` [N, V].

    Categories are merged into ``num_bins`` equal-width bins first when given (e.g. 256 pixel
    levels → 8 bins), and counts are smoothed with ``alpha`` per cell. Missing values are not allowed.
    The pairs' joint counts are built for a block of variables at a time (about ``block_bytes`` of float64
    counts), so memory grows with V, not with (V · bins)²: 32×32×3 images need tens of MB, not 17 GB.
    """
    data = torch.as_tensor(data, dtype=torch.long)
    if data.dim() != 2 or len(data) == 0:
        raise ValueError(f"data must be a non-empty [N, V] tensor, got shape {tuple(data.shape)}")
    if (data < 0).any() or (data >= num_categories).any():
        raise ValueError(f"data must hold complete category ids in [0, {num_categories}) to learn a Chow-Liu tree")
    bins = num_categories if num_bins is None else min(num_bins, num_categories)
    codes = data * bins // num_categories + torch.arange(data.shape[1]) * bins        # column of each one-hot 1
    num_vars = data.shape[1]
    information = torch.empty(num_vars, num_vars, dtype=torch.float64)
    per_block = max(1, block_bytes // (num_vars * bins * bins * 8))
    for first in range(0, num_vars, per_block):
        last = min(first + per_block, num_vars)
        joint = torch.zeros((last - first) * bins, num_vars * bins, dtype=torch.float64)
        for start in range(0, len(data), chunk_size):
            chunk = codes[start:start + chunk_size]
            one_hot = torch.zeros(len(chunk), num_vars * bins, dtype=torch.float32)
            one_hot.scatter_(1, chunk, 1.0)
            joint += (one_hot[:, first * bins:last * bins].T @ one_hot).double()
        information[first:last] = _pair_information(joint.reshape(last - first, bins, num_vars, bins), alpha)
    information.fill_diagonal_(0.0)
    return information.numpy()


def _pair_information(counts: Tensor, alpha: float) -> Tensor:
    """Mutual information [R, V] of the smoothed joint counts [R, bins, V, bins] of R variables with V."""
    joint = counts.permute(0, 2, 1, 3) + alpha
    joint = joint / joint.sum((2, 3), keepdim=True)
    left, right = joint.sum(3, keepdim=True), joint.sum(2, keepdim=True)
    return (joint * (joint.log() - left.log() - right.log())).sum((2, 3))


def chow_liu_tree(information: np.ndarray, root: int | None = None) -> tuple[list[int], list[list[int]], list[int]]:
    """Maximum spanning tree of the mutual information, rooted at ``root`` (default: the tree's centre,
    which keeps the circuit shallow). Returns ``(parents, children, bfs_order)``; the root's parent is -1."""
    num_vars = information.shape[0]
    if num_vars == 1:
        return [-1], [[]], [0]
    weights = information.max() + 1.0 - information      # positive, so every pair is an edge
    np.fill_diagonal(weights, 0.0)
    tree = minimum_spanning_tree(weights).toarray()
    adjacency = [[] for _ in range(num_vars)]
    for a, b in zip(*np.nonzero(tree)):
        adjacency[a].append(int(b))
        adjacency[b].append(int(a))
    if root is None:
        root = _centre(adjacency)
    parents, order, seen = [-1] * num_vars, [], {root}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        order.append(node)
        for neighbour in sorted(adjacency[node]):
            if neighbour not in seen:
                seen.add(neighbour)
                parents[neighbour] = node
                queue.append(neighbour)
    children = [[] for _ in range(num_vars)]
    for child, parent in enumerate(parents):
        if parent >= 0:
            children[parent].append(child)
    return parents, children, order


def _centre(adjacency: list[list[int]]) -> int:
    """A centre of the tree: repeatedly strip leaves until one or two nodes remain."""
    degree = [len(neighbours) for neighbours in adjacency]
    leaves = [node for node, d in enumerate(degree) if d <= 1]
    remaining = len(adjacency)
    while remaining > 2:
        remaining -= len(leaves)
        next_leaves = []
        for leaf in leaves:
            for neighbour in adjacency[leaf]:
                degree[neighbour] -= 1
                if degree[neighbour] == 1:
                    next_leaves.append(neighbour)
        leaves = next_leaves
    return leaves[0]


def hclt_from_tree(children: list[list[int]], order: list[int], num_latents: int, num_categories: int) -> Node:
    """The HCLT circuit for a rooted tree: unit ``i`` of variable ``v``'s product is
    ``p(x_v | z_v = i) · Π_c Σ_j p(z_c = j | z_v = i) · (subtree of c | z_c = j)``."""
    subtree: dict[int, Node] = {}
    for variable in reversed(order):
        leaf = inputs(variable, num_latents, num_categories, name=f"x{variable}")
        messages = [summation(subtree.pop(child), num_latents, name=f"z{child}|z{variable}")
                    for child in children[variable]]
        subtree[variable] = multiply(leaf, *messages, name=f"subtree{variable}") if messages else leaf
    return summation(subtree[order[0]], 1, name=f"z{order[0]}")


def infer_num_categories(data: Tensor) -> int:
    """``data.max() + 1`` for complete category ids ``[N, V]``; refuses data that cannot tell."""
    data = torch.as_tensor(data)
    if data.dim() != 2 or data.numel() == 0 or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ValueError(f"cannot infer num_categories from data of dtype {data.dtype} and shape "
                         f"{tuple(data.shape)}; pass num_categories= (data must be a non-empty LongTensor [N, V])")
    if int(data.max()) < 1:
        raise ValueError("cannot infer num_categories: every value in data is 0 (or missing); pass num_categories=")
    return int(data.max()) + 1


def hclt(data: Tensor, num_latents: int, num_categories: int | None = None, *, num_bins: int | None = None,
         root: int | None = None, num_trees: int = 1, seed: int = 0) -> Node:
    """An HCLT over the columns of ``data`` [N, V] (complete category ids) with hidden size ``num_latents``.

    ``num_categories`` defaults to ``data.max() + 1``; pass it when some category never occurs in
    ``data``. ``num_trees > 1`` gives a mixture of HCLTs: the first tree is learnt from ``data``, the
    others from bootstrap resamples of it (drawn with ``seed``).
    """
    for name, value in (("num_latents", num_latents), ("num_trees", num_trees)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_categories is None:
        num_categories = infer_num_categories(data)
    generator = torch.Generator().manual_seed(seed)
    components = []
    for tree in range(num_trees):
        sample = data if tree == 0 else data[torch.randint(0, len(data), (len(data),), generator=generator)]
        information = mutual_information(sample, num_categories, num_bins=num_bins)
        _, children, order = chow_liu_tree(information, root)
        components.append(hclt_from_tree(children, order, num_latents, num_categories))
    return components[0] if num_trees == 1 else summation(components, 1, name="hclt_mixture")
