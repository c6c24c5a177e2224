"""The scaled-probability tree passes against a naive log-space recursion (per-node logsumexp, float64 autograd
for the flows and counts), on chains and branching trees, with missing leaves, in float32 and float64."""
import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc.tree_pass import downward, plan_tree, upward
from tests.pc.patch_reference import children_of

TREES = {"chain": (-1, 0, 1, 2, 3, 4, 5),              # 7 levels
         "reversed chain": (1, 2, 3, -1, 3),            # root in the middle
         "branching": (2, 2, -1, 2, 0, 0, 3, 6, 6)}     # several children per node, 4 levels


def random_tree_inputs(parents, groups=3, columns=5, hidden=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    nodes = len(parents)
    leaf = torch.rand(groups, nodes, columns, hidden, generator=generator, dtype=torch.float64) ** 3 + 1e-3
    leaf[:, 1, 0] = 1.0                                  # missing values: a leaf factor of 1
    leaf[:, :, 2] = 1.0                                  # a column with nothing observed
    transitions = torch.rand(groups, nodes - 1, hidden, hidden, generator=generator, dtype=torch.float64) + 0.05
    root = torch.rand(groups, hidden, generator=generator, dtype=torch.float64) + 0.05
    return leaf, transitions / transitions.sum(-1, keepdim=True), root / root.sum(-1, keepdim=True)


def naive_log_likelihood(parents, log_leaf, log_transitions, log_root):
    """[G, M] by a per-node logsumexp recursion in log space (node by node, no scaling)."""
    children, root = children_of(parents), list(parents).index(-1)
    row = {v: i for i, v in enumerate(v for v in range(len(parents)) if v != root)}

    def subtree(v):                                                        # [G, M, H]
        out = log_leaf[:, v]
        for child in children[v]:
            weights = log_transitions[:, row[child]]                       # [G, Hp, Hc]
            out = out + torch.logsumexp(weights[:, None] + subtree(child)[:, :, None, :], -1)
        return out
    return torch.logsumexp(log_root[:, None] + subtree(root), -1)


def naive_pass(parents, leaf, transitions, root, root_flows):
    """(log-likelihood, flows [G, D, M, H], transition counts, root counts) of the naive recursion; the flows and
    counts are θ·∂(Σ root_flows·log p)/∂θ by autograd."""
    log_leaf = leaf.log().requires_grad_(True)
    log_transitions = transitions.log().requires_grad_(True)
    log_root = root.log().requires_grad_(True)
    ll = naive_log_likelihood(parents, log_leaf, log_transitions, log_root)
    (ll * root_flows).sum().backward()
    return ll.detach(), log_leaf.grad, log_transitions.grad, log_root.grad


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("tree", sorted(TREES))
def test_passes_match_naive_log_space_recursion(tree, dtype, tolerance):
    parents = TREES[tree]
    leaf, transitions, root = random_tree_inputs(parents)
    root_flows = torch.rand(leaf.shape[0], leaf.shape[2], generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
    expected_ll, expected_flows, expected_transitions, expected_root = naive_pass(parents, leaf, transitions, root,
                                                                                 root_flows)
    plan = plan_tree(parents)
    cast = [t.to(dtype) for t in (leaf, transitions, root, root_flows)]
    passed = upward(plan, cast[0].clone(), cast[1], cast[2])
    torch.testing.assert_close(passed.log_likelihood.double(), expected_ll, rtol=tolerance, atol=tolerance)
    transition_counts, root_counts = torch.zeros_like(cast[1]), torch.zeros_like(cast[2])
    flows = downward(plan, passed, cast[1], cast[2], cast[3], transition_counts=transition_counts,
                     root_counts=root_counts)
    for name, got, expected in (("flows", flows, expected_flows), ("transitions", transition_counts,
                                                                   expected_transitions),
                                ("root", root_counts, expected_root)):
        torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance, msg=name)



@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("tree", sorted(TREES))
def test_node_major_values_match_naive_log_space_recursion(tree, dtype, tolerance):
    # a strided [G, D, M, H] view of a node-major [D, M, G, H] buffer (the passes take any strides); the flows come
    # back in it
    parents = TREES[tree]
    leaf, transitions, root = random_tree_inputs(parents, groups=4, columns=6, hidden=3, seed=3)
    root_flows = torch.rand(4, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected_ll, expected_flows, expected_transitions, expected_root = naive_pass(parents, leaf, transitions, root,
                                                                                 root_flows)
    buffer = leaf.permute(1, 2, 0, 3).to(dtype).contiguous()                           # [D, M, G, H]
    cast = [t.to(dtype) for t in (transitions, root, root_flows)]
    plan = plan_tree(parents)
    passed = upward(plan, buffer.permute(2, 0, 1, 3), cast[0], cast[1])
    torch.testing.assert_close(passed.log_likelihood.double(), expected_ll, rtol=tolerance, atol=tolerance)
    transition_counts, root_counts = torch.zeros_like(cast[0]), torch.zeros_like(cast[1])
    flows = downward(plan, passed, cast[0], cast[1], cast[2], transition_counts=transition_counts,
                     root_counts=root_counts)
    assert flows.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(buffer.permute(2, 0, 1, 3).double(), expected_flows, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(transition_counts.double(), expected_transitions, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(root_counts.double(), expected_root, rtol=tolerance, atol=tolerance)

@pytest.mark.parametrize("hidden, columns", [(4, 5), (16, 13)])      # the kernel's packed rows, and the rest
def test_log_scale_and_tiny_leaves(hidden, columns):
    # leaves far below float32's range once multiplied over the tree: the pass rescales every node
    parents = TREES["chain"]
    leaf, transitions, root = random_tree_inputs(parents, columns=columns, hidden=hidden, seed=2)
    small = leaf * 1e-30
    expected = naive_log_likelihood(parents, small.log(), transitions.log(), root.log())
    passed = upward(plan_tree(parents), small.float(), transitions.float(), root.float(),
                    log_scale=torch.full((3, columns), 2.0))
    torch.testing.assert_close(passed.log_likelihood.double(), expected + 2.0, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("hidden, children", [(32, 40), (4, 80)])
def test_star_tree_in_float32(hidden, children, kernel, monkeypatch):
    # a root with many children (the latent tree of a circuit whose latents carry no information is a star): were
    # every message to sum to 1 its entries would average 1/H, and their product at the root, H^-children, would
    # leave float32's range (all flows zero); scaled to peak at 1 the pass agrees with float64
    if not kernel:
        monkeypatch.setenv("HMMLVD_KERNELS", "0")
    parents = (-1,) + (0,) * children
    leaf, transitions, root = random_tree_inputs(parents, groups=2, columns=8, hidden=hidden, seed=5)
    assert children * torch.log10(torch.tensor(float(hidden))) > 38        # 1/H per child leaves float32
    root_flows = torch.ones(2, 8, dtype=torch.float64)
    expected_ll, expected_flows, expected_transitions, _ = naive_pass(parents, leaf, transitions, root, root_flows)
    plan = plan_tree(parents)
    passed = upward(plan, leaf.float(), transitions.float(), root.float())
    torch.testing.assert_close(passed.log_likelihood.double(), expected_ll, rtol=1e-5, atol=1e-3)
    transition_counts = torch.zeros_like(transitions, dtype=torch.float32)
    flows = downward(plan, passed, transitions.float(), root.float(), root_flows.float(),
                     transition_counts=transition_counts)
    torch.testing.assert_close(flows.double(), expected_flows, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(transition_counts.double(), expected_transitions, rtol=1e-4, atol=1e-4)


def deep_circuit(tied, dtype):
    """P = 3 patches of D = 7 values (a 7-level chain and a branching latent tree), k = 2, H = 3."""
    config = pc.PatchCircuitConfig(num_patches=3, values_per_patch=7, num_clusters=2, hidden_size=3,
                                   latent_hidden_size=2, num_categories=5, tied=tied, latent_parents=(1, -1, 1))
    return pc.PatchCircuit(config, seed=7, dtype=dtype)


@pytest.mark.parametrize("tied", [False, True])
def test_float32_circuit_matches_float64_reference(tied):
    # deep patch trees with missing values: the float32 engine agrees with float64 to float32 precision
    from tests.pc.patch_reference import naive_counts
    reference, single = deep_circuit(tied, torch.float64), deep_circuit(tied, torch.float32)
    x = torch.randint(0, 5, (4, 3, 7), generator=torch.Generator().manual_seed(0))
    x[0, 1, 3:] = -1
    x[2, 0] = -1
    logs, expected = naive_counts(reference, x)
    counts = single.zero_counts()
    torch.testing.assert_close(single.accumulate_counts(x, counts).double(), logs, rtol=2e-6, atol=1e-4)
    for name, values in expected.items():
        torch.testing.assert_close(counts[name].double(), values, rtol=1e-4, atol=2e-5, msg=name)
    z = torch.randint(0, 2, (4, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pc.complete_log_likelihood(single, x, z).double(),
                               pc.complete_log_likelihood(reference, x, z), rtol=2e-6, atol=1e-4)
