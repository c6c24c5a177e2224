"""Leaves given as table rows (hmmlvd.pc.tree_pass.Leaves): the passes that gather them and scatter their flows
(the C kernel's fused gather and count scatter, and the torch code) against a naive per-element reference, on
trees with several levels, one stack or several, with a tree-to-table map, missing values and both precisions."""
import pytest
import torch

from hmmlvd.pc import tree_kernel
from hmmlvd.pc.tree_pass import Leaves, downward, plan_tree, upward

PARENTS = (3, 3, 0, -1, 0, 2, 2, 1)                       # four levels: 3 -> {0, 1}, 0 -> {2, 4}, 2 -> {5, 6}, 1 -> 7
CATEGORIES = 5


def leaf_problem(groups, stacks, columns, hidden, entries, mapped, dtype, seed):
    """A random table [T, D, K, H], index [S, D, M] with missing values, optional tree map [G], transitions,
    root weights and root flows."""
    generator = torch.Generator().manual_seed(seed)
    nodes = len(PARENTS)
    table = torch.rand(entries, nodes, CATEGORIES, hidden, generator=generator, dtype=torch.float64) + 0.02
    table[0, 1, 2] = 0.0                                  # a zero emission: clamped at tiny, as the torch code does
    index = torch.randint(0, CATEGORIES, (stacks, nodes, columns), generator=generator)
    index[torch.rand(index.shape, generator=generator) < 0.2] = -1
    index[:, :, 0] = -1                                   # one column with nothing observed
    trees = torch.randint(0, entries, (groups,), generator=generator) if mapped else None
    transitions = torch.rand(groups, nodes - 1, hidden, hidden, generator=generator, dtype=torch.float64) + 0.05
    root = torch.rand(groups, hidden, generator=generator, dtype=torch.float64) + 0.05
    flows = torch.rand(groups, columns, generator=generator, dtype=torch.float64)
    cast = [t.to(dtype) for t in (table, transitions / transitions.sum(-1, keepdim=True),
                                  root / root.sum(-1, keepdim=True), flows)]
    return Leaves(cast[0], index, trees), *cast[1:]


def naive_leaf(leaves, groups):
    """The leaves [G, D, M, H] element by element."""
    stacks, nodes, columns = leaves.index.shape
    hidden = leaves.table.shape[-1]
    tiny = torch.finfo(leaves.table.dtype).tiny
    leaf = torch.ones(groups, nodes, columns, hidden, dtype=leaves.table.dtype)
    for g in range(groups):
        entry = g if leaves.trees is None else int(leaves.trees[g])
        stack = g // (groups // stacks)
        for v in range(nodes):
            for m in range(columns):
                value = int(leaves.index[stack, v, m])
                if value >= 0:
                    leaf[g, v, m] = leaves.table[entry, v, value].clamp_min(tiny)
    return leaf


def naive_scatter(leaves, flows):
    """Every observed leaf's flow added into a table of counts, element by element."""
    counts = torch.zeros_like(leaves.table)
    groups, nodes, columns, _ = flows.shape
    stacks = leaves.index.shape[0]
    for g in range(groups):
        entry = g if leaves.trees is None else int(leaves.trees[g])
        for v in range(nodes):
            for m in range(columns):
                value = int(leaves.index[g // (groups // stacks), v, m])
                if value >= 0:
                    counts[entry, v, value] += flows[g, v, m]
    return counts


def kernel_modes():
    return [False, pytest.param(True, marks=pytest.mark.skipif(not tree_kernel.available(),
                                                               reason="the tree-pass C kernel is unavailable"))]


@pytest.mark.parametrize("use_kernel", kernel_modes())
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("groups, stacks, columns, hidden, entries, mapped", [
    (6, 1, 9, 3, 6, False),          # tied: one stack read by every tree
    (6, 3, 7, 4, 6, False),          # untied: three stacks of two trees
    (2, 1, 150, 16, 2, False),       # few trees, many columns: the kernel splits the columns (private counts)
    (12, 1, 70, 16, 12, False),      # many trees: each thread owns whole trees and their table entries
    (5, 5, 6, 4, 3, True),           # one tree per stack, trees reading shared table entries (the Lemma-1 pass)
    (3, 1, 20, 8, 3, False),         # the kernel's other compiled widths: H = 8, 32 and 64
    (3, 3, 20, 32, 3, False),
    (2, 1, 20, 64, 2, False),
])
def test_gathered_passes_match_naive_gather_and_scatter(groups, stacks, columns, hidden, entries, mapped, dtype,
                                                        tolerance, use_kernel, monkeypatch):
    if not use_kernel:
        monkeypatch.setattr(tree_kernel, "available", lambda: False)
    leaves, transitions, root, root_flows = leaf_problem(groups, stacks, columns, hidden, entries, mapped, dtype,
                                                         seed=groups * columns + hidden)
    plan = plan_tree(PARENTS)
    reference_leaf = naive_leaf(leaves, groups)
    torch.testing.assert_close(leaves.gather(torch.empty_like(reference_leaf)), reference_leaf, rtol=0, atol=0)
    monkeypatch.setattr(tree_kernel, "available", lambda: False)           # the reference runs the torch passes
    expected = upward(plan, reference_leaf.clone(), transitions, root)
    expected_flows = downward(plan, expected, transitions, root, root_flows)
    expected_counts = naive_scatter(leaves, expected_flows)
    monkeypatch.undo()
    if not use_kernel:
        monkeypatch.setattr(tree_kernel, "available", lambda: False)
    passed = upward(plan, leaves, transitions, root)
    torch.testing.assert_close(passed.log_likelihood, expected.log_likelihood, rtol=tolerance, atol=tolerance)
    counts = torch.full_like(leaves.table, 0.5)                       # counts are added to what is there
    flows = downward(plan, passed, transitions, root, root_flows, leaf_counts=counts)
    torch.testing.assert_close(counts - 0.5, expected_counts, rtol=tolerance, atol=tolerance)
    observed = (leaves.index >= 0).repeat_interleave(groups // stacks, 0)[..., None]          # [G, D, M, 1]
    torch.testing.assert_close(flows * observed, expected_flows * observed, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("use_kernel", kernel_modes())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("groups, stacks, columns, hidden, mapped", [
    (6, 3, 7, 3, False),             # untied, generic H, fewer columns than a tile
    (2, 1, 150, 16, False),          # the columns split over the threads
    (12, 1, 1100, 16, False),        # whole trees per thread, several column blocks each (H = 16 vector path)
    (9, 1, 301, 4, True),            # H = 4 packed path, odd column count, trees reading shared table entries
])
def test_likelihoods_without_kept_values(groups, stacks, columns, hidden, mapped, dtype, use_kernel, monkeypatch):
    """upward(keep_values=False) gives the likelihoods of the pass that keeps its values (the kernel: the same
    blocks in cache, so the same numbers to the bit), keeps no values where the kernel runs, and refuses a
    downward pass."""
    leaves, transitions, root, root_flows = leaf_problem(groups, stacks, columns, hidden, groups, mapped, dtype,
                                                         seed=columns + hidden)
    plan = plan_tree(PARENTS)
    monkeypatch.setattr(tree_kernel, "available", lambda: False)
    reference = upward(plan, leaves, transitions, root).log_likelihood               # the torch code
    monkeypatch.undo()
    if not use_kernel:
        monkeypatch.setattr(tree_kernel, "available", lambda: False)
    kept = upward(plan, leaves, transitions, root)
    passed = upward(plan, leaves, transitions, root, keep_values=False)
    assert (passed.values is None) == use_kernel
    assert torch.equal(passed.log_likelihood, kept.log_likelihood)
    assert torch.equal(passed.root_sums, kept.root_sums)
    tolerance = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(passed.log_likelihood, reference, rtol=tolerance, atol=tolerance)
    if use_kernel:
        with pytest.raises(ValueError, match="kept no values"):
            downward(plan, passed, transitions, root, root_flows)


def test_leaf_counts_need_leaves():
    plan = plan_tree((-1, 0))
    transitions = torch.full((1, 1, 2, 2), 0.5)
    passed = upward(plan, torch.rand(1, 2, 3, 2) + 0.1, transitions, torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="Leaves"):
        downward(plan, passed, transitions, torch.full((1, 2), 0.5), torch.ones(1, 3),
                 leaf_counts=torch.zeros(1, 2, 2, 2))


def test_bad_leaves_are_refused():
    table = torch.rand(2, 3, 4, 5)
    with pytest.raises(ValueError, match="int64 index"):
        Leaves(table, torch.zeros(1, 3, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match="int64 index"):
        Leaves(table, torch.zeros(1, 2, 6, dtype=torch.int64))                   # D differs from the table's
    with pytest.raises(ValueError, match="trees"):
        Leaves(table, torch.zeros(1, 3, 6, dtype=torch.int64), torch.zeros(2, 1, dtype=torch.int64))
    strided = torch.zeros(1, 3, 12, dtype=torch.int64)[..., ::2]
    assert Leaves(table, strided).index.is_contiguous()


@pytest.mark.parametrize("use_kernel", kernel_modes())
@pytest.mark.parametrize("hidden", [3, 4, 16])
def test_single_node_tree(hidden, use_kernel, monkeypatch):
    """A tree of one node (a childless root, whose leaves the kernel copies in rather than multiplying them into a
    child's message): likelihoods and leaf counts against the naive gather and scatter."""
    generator = torch.Generator().manual_seed(hidden)
    table = torch.rand(3, 1, CATEGORIES, hidden, generator=generator, dtype=torch.float64) + 0.02
    index = torch.randint(-1, CATEGORIES, (1, 1, 13), generator=generator)
    leaves = Leaves(table, index)
    transitions = torch.empty(3, 0, hidden, hidden, dtype=torch.float64)
    root = torch.rand(3, hidden, generator=generator, dtype=torch.float64) + 0.05
    root = root / root.sum(-1, keepdim=True)
    root_flows = torch.rand(3, 13, generator=generator, dtype=torch.float64)
    leaf = naive_leaf(leaves, 3)                                                            # [3, 1, 13, H]
    expected = (leaf[:, 0] * root[:, None]).sum(-1).log()
    expected_flows = leaf * root[:, None, None] / (leaf * root[:, None, None]).sum(-1, keepdim=True)
    expected_flows = expected_flows * root_flows[:, None, :, None]
    if not use_kernel:
        monkeypatch.setattr(tree_kernel, "available", lambda: False)
    plan = plan_tree((-1,))
    passed = upward(plan, leaves, transitions, root)
    torch.testing.assert_close(passed.log_likelihood, expected, rtol=1e-12, atol=1e-12)
    counts = torch.zeros_like(table)
    downward(plan, passed, transitions, root, root_flows, leaf_counts=counts)
    torch.testing.assert_close(counts, naive_scatter(leaves, expected_flows), rtol=1e-12, atol=1e-12)
