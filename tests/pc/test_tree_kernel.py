"""The C kernel of the tree passes (hmmlvd.pc.tree_kernel) against the torch passes and against brute-force
enumeration in float64 log space; its build cache, the HMMLVD_KERNELS=0 switch and the fallback after a failed
build."""
import itertools
import os
import stat

import pytest
import torch

from hmmlvd import pc
from hmmlvd.pc import tree_kernel
from hmmlvd.pc.tree_pass import downward, plan_tree, upward

pytestmark = pytest.mark.skipif(not tree_kernel.available(), reason="the tree-pass C kernel is unavailable (no C "
                                                                    "compiler, a failed build or HMMLVD_KERNELS=0)")


def random_parents(num_nodes, seed):
    """A random tree: node v > 0 hangs under a random earlier node, then the ids are shuffled."""
    generator = torch.Generator().manual_seed(seed)
    parents = [-1] + [int(torch.randint(0, v, (1,), generator=generator)) for v in range(1, num_nodes)]
    relabel = torch.randperm(num_nodes, generator=generator).tolist()            # old id -> new id
    shuffled = [0] * num_nodes
    for old, parent in enumerate(parents):
        shuffled[relabel[old]] = -1 if parent < 0 else relabel[parent]
    return tuple(shuffled)


TREES = {"random 7": random_parents(7, 0), "random 12": random_parents(12, 1), "random 16": random_parents(16, 2),
         "chain": tuple(range(-1, 9)), "star": (3, 3, 3, -1, 3, 3, 3, 3)}


def tree_inputs(parents, groups, columns, hidden, dtype, seed=0):
    """Leaves as a strided [G, D, M, H] view of a node-major [D, M, G, H] buffer (the passes take any strides), with
    missing values (a factor of 1), normalised transitions [G, D-1, H, H], root weights [G, H], root flows [G, M]."""
    generator = torch.Generator().manual_seed(seed)
    nodes = len(parents)
    leaf = torch.rand(nodes, columns, groups, hidden, generator=generator, dtype=torch.float64) ** 3 + 1e-3
    leaf[1, 0] = 1.0
    leaf[:, -1] = 1.0
    transitions = torch.rand(groups, nodes - 1, hidden, hidden, generator=generator, dtype=torch.float64) + 0.05
    root = torch.rand(groups, hidden, generator=generator, dtype=torch.float64) + 0.05
    flows = torch.rand(groups, columns, generator=generator, dtype=torch.float64)
    return [t.to(dtype) for t in (leaf, transitions / transitions.sum(-1, keepdim=True),
                                  root / root.sum(-1, keepdim=True), flows)]


def run_passes(parents, leaf, transitions, root, root_flows, counts, kernel_up, kernel_down, monkeypatch,
               contiguous=False):
    """(log-likelihood, values and messages sent after the upward pass, flows, transition counts, root counts), each
    pass on the kernel or the torch code as asked."""
    plan = plan_tree(parents)
    buffer = leaf.permute(2, 0, 1, 3).contiguous() if contiguous else leaf.clone()
    with monkeypatch.context() as patch:
        if not kernel_up:
            patch.setattr(tree_kernel, "available", lambda: False)
        passed = upward(plan, buffer if contiguous else buffer.permute(2, 0, 1, 3), transitions, root)
    after_up = (passed.values.clone(), sent_messages(plan, passed, transitions))
    transition_counts = torch.full_like(transitions, 0.5) if counts else None
    root_counts = torch.full_like(root, 0.25) if counts else None
    with monkeypatch.context() as patch:
        if not kernel_down:
            patch.setattr(tree_kernel, "available", lambda: False)
        flows = downward(plan, passed, transitions, root, root_flows, transition_counts=transition_counts,
                         root_counts=root_counts)
    assert flows.data_ptr() == buffer.data_ptr() and passed.messages == []
    return passed.log_likelihood, *after_up, flows, transition_counts, root_counts


def sent_messages(plan, passed, transitions):
    """The messages [D-1, G, M, H] of an upward pass: the torch code's, checked against the values (the message
    node v sent is w_v times its values); the kernel keeps none, so they come from its values."""
    from_values = torch.stack([passed.values[:, node] @ transitions[:, plan.rows[node]].transpose(1, 2)
                               for node in plan.order])
    if passed.messages is not None:
        torch.testing.assert_close(from_values, passed.messages)
    return from_values


def assert_passes_close(got, expected, tolerance):
    """The outputs of two :func:`run_passes` agree: relatively to ``tolerance``, and the log-likelihoods within
    ``tolerance`` absolutely too (the all-missing column's log-likelihood is 0 up to rounding)."""
    names = ("log-likelihood", "values", "messages", "flows", "transition counts", "root counts")
    for name, value, reference in zip(names, got, expected):
        if reference is not None:
            absolute = tolerance if name == "log-likelihood" else tolerance * 1e-2
            torch.testing.assert_close(value, reference, rtol=tolerance, atol=absolute, msg=name)


@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hidden", [1, 3, 4, 16, 20])
@pytest.mark.parametrize("groups", [1, 2, 5])
@pytest.mark.parametrize("tree", sorted(TREES))
def test_kernel_matches_torch_passes(tree, groups, hidden, dtype, counts, monkeypatch):
    inputs = tree_inputs(TREES[tree], groups, 7, hidden, dtype, seed=groups * hidden)
    expected = run_passes(TREES[tree], *inputs, counts, False, False, monkeypatch)
    got = run_passes(TREES[tree], *inputs, counts, True, True, monkeypatch)
    assert_passes_close(got, expected, 1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hidden", [4, 16, 64])                   # 64: the latent tree's size at k = 64
@pytest.mark.parametrize("tree", ["random 16", "star", "chain"])
def test_contiguous_rows_match_torch_passes(tree, hidden, dtype, monkeypatch):
    # contiguous [G, D, M, H] values: H = 4 and 16 run the packed float32 paths (four or eight columns at a time),
    # and 21 columns leave a remainder to the generic loops
    inputs = tree_inputs(TREES[tree], 3, 21, hidden, dtype, seed=hidden)
    expected = run_passes(TREES[tree], *inputs, True, False, False, monkeypatch, contiguous=True)
    got = run_passes(TREES[tree], *inputs, True, True, True, monkeypatch, contiguous=True)
    assert_passes_close(got, expected, 1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("kernel_up, kernel_down", [(True, False), (False, True)])
def test_either_pass_feeds_the_other(kernel_up, kernel_down, monkeypatch):
    parents = TREES["random 12"]
    inputs = tree_inputs(parents, 3, 6, 4, torch.float32, seed=5)
    expected = run_passes(parents, *inputs, True, False, False, monkeypatch)
    assert_passes_close(run_passes(parents, *inputs, True, kernel_up, kernel_down, monkeypatch), expected, 1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_trees_and_columns(threads, monkeypatch):
    # 9 trees of H = 16 over 300 columns: each thread owns whole trees, whose columns come in several blocks
    parents = TREES["random 16"]
    inputs = tree_inputs(parents, 9, 300, 16, torch.float32, seed=9)
    expected = run_passes(parents, *inputs, True, False, False, monkeypatch)
    assert_passes_close(kernel_passes_on(threads, parents, inputs, monkeypatch), expected, 1e-5)


def kernel_passes_on(threads, parents, inputs, monkeypatch):
    """:func:`run_passes` on the kernel, both ways, with ``threads`` torch threads (restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run_passes(parents, *inputs, True, True, True, monkeypatch)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_downward_flushes_subnormal_flows(threads, monkeypatch):
    # sharp leaves (impossible values clamped at tiny, as the gather does) give posteriors below the smallest normal
    # number: the torch pass keeps them as subnormals, the kernel's downward pass flushes them to zero (it is
    # several times faster so) and agrees on everything else; the caller's float mode is restored afterwards
    parents, tiny = TREES["chain"], torch.finfo(torch.float32).tiny
    generator = torch.Generator().manual_seed(0)
    leaf = torch.softmax(torch.randn(len(parents), 64, 4, 16, generator=generator, dtype=torch.float64) * 20, -1)
    transitions = torch.softmax(torch.randn(4, len(parents) - 1, 16, 16, generator=generator,
                                            dtype=torch.float64) * 2, -1)
    inputs = [leaf.float().clamp_min(tiny), transitions.float(), torch.full((4, 16), 1 / 16), torch.ones(4, 64)]
    expected = run_passes(parents, *inputs, True, False, False, monkeypatch)
    got = kernel_passes_on(threads, parents, inputs, monkeypatch)

    def subnormal(flows):
        return (flows != 0) & (flows.abs() < tiny)

    assert subnormal(expected[3]).sum() > 100 and not subnormal(got[3]).any()
    assert (got[3][subnormal(expected[3])] == 0).all()
    assert_passes_close(got, expected, 1e-5)
    assert (torch.tensor([tiny], dtype=torch.float32) / 4).item() != 0        # subnormals are back outside


def brute_force(parents, leaf, transitions, root, root_flows):
    """(log-likelihood [G, M], flows [G, D, M, H], transition counts, root counts) by enumerating every joint
    hidden state in float64 log space; ``leaf`` [G, D, M, H]."""
    groups, nodes, columns, hidden = leaf.shape
    root_node = parents.index(-1)
    rows = {v: i for i, v in enumerate(v for v in range(nodes) if v != root_node)}
    states = torch.tensor(list(itertools.product(range(hidden), repeat=nodes)))            # [S, D]
    log_joint = root.log()[:, states[:, root_node]][..., None]                             # [G, S, 1]
    for v in range(nodes):
        log_joint = log_joint + leaf.log()[:, v][:, :, states[:, v]].transpose(1, 2)       # [G, S, M]
        if v != root_node:
            log_joint = log_joint + transitions.log()[:, rows[v], states[:, parents[v]], states[:, v]][..., None]
    ll = torch.logsumexp(log_joint, 1)                                                     # [G, M]
    weight = torch.exp(log_joint - ll[:, None]) * root_flows[:, None]                      # [G, S, M]
    one_hot = torch.nn.functional.one_hot(states, hidden).double()                         # [S, D, H]
    flows = torch.einsum("gsm,sdh->gdmh", weight, one_hot)
    per_state = weight.sum(2)                                                              # [G, S]
    transition_counts = torch.zeros_like(transitions)
    for v, row in rows.items():
        pairs = one_hot[:, parents[v], :, None] * one_hot[:, v, None, :]                   # [S, Hp, Hc]
        transition_counts[:, row] = torch.einsum("gs,sab->gab", per_state, pairs)
    return ll, flows, transition_counts, per_state @ one_hot[:, root_node]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_kernel_matches_brute_force(dtype, tolerance):
    parents = (2, 2, -1, 1, 1)                                     # a root with two children, one of them with two
    leaf, transitions, root, root_flows = tree_inputs(parents, 3, 4, 3, torch.float64, seed=11)
    values = leaf.permute(2, 0, 1, 3)                                                      # [G, D, M, H]
    expected = brute_force(parents, values, transitions, root, root_flows)
    cast = [t.to(dtype) for t in (values, transitions, root, root_flows)]
    passed = upward(plan_tree(parents), cast[0].clone(), cast[1], cast[2])
    transition_counts, root_counts = torch.zeros_like(cast[1]), torch.zeros_like(cast[2])
    flows = downward(plan_tree(parents), passed, cast[1], cast[2], cast[3], transition_counts=transition_counts,
                     root_counts=root_counts)
    for name, got, reference in zip(("log-likelihood", "flows", "transition counts", "root counts"),
                                    (passed.log_likelihood, flows, transition_counts, root_counts), expected):
        torch.testing.assert_close(got.double(), reference, rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.parametrize("hidden", [4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_likelihood_far_below_the_smallest_float(dtype, hidden, monkeypatch):
    """A chain of 60 sharp leaves (every entry about 1e-30, the rest clamped at the smallest normal number): the
    product of the scales, near 1e-1800, lies far outside float32 and float64, and the kernel, which keeps it as
    a mantissa and an exponent per column, still gives the log-likelihood of the torch pass in float64 (which adds
    the scales' logs one by one)."""
    parents = tuple(range(-1, 59))
    generator = torch.Generator().manual_seed(5)
    leaf = (torch.rand(60, 12, 3, hidden, generator=generator, dtype=torch.float64) * 1e-30)
    leaf = leaf.masked_fill(torch.rand(leaf.shape, generator=generator) < 0.3, 0.0).clamp_min(1.2e-38)
    _, transitions, root, _ = tree_inputs(parents, 3, 12, hidden, torch.float64, seed=5)
    plan = plan_tree(parents)
    with monkeypatch.context() as patch:
        patch.setattr(tree_kernel, "available", lambda: False)
        expected = upward(plan, leaf.permute(2, 0, 1, 3).clone(), transitions, root).log_likelihood
    got = upward(plan, leaf.permute(2, 0, 1, 3).to(dtype), transitions.to(dtype), root.to(dtype)).log_likelihood
    assert bool((expected < -3500).all()) and bool(torch.isfinite(got).all())
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=0.0)


@pytest.mark.parametrize("hidden", [5, 16])                   # 16: the packed rows (tied 30 columns, untied 10)
@pytest.mark.parametrize("tied", [True, False])
def test_patch_circuit_counts_match_torch(tied, hidden, monkeypatch):
    config = pc.PatchCircuitConfig(num_patches=3, values_per_patch=6, num_clusters=4, hidden_size=hidden,
                                   latent_hidden_size=3, num_categories=7, tied=tied,
                                   value_parents=(-1, 0, 0, 1, 1, 2))
    circuit = pc.PatchCircuit(config, seed=2)
    x = torch.randint(0, 7, (10, 3, 6), generator=torch.Generator().manual_seed(3))
    x[0, 1, 2:] = -1
    z = torch.randint(0, 4, (10, 3), generator=torch.Generator().manual_seed(4))
    results = []
    for use_kernel in (False, True):
        with monkeypatch.context() as patch:
            if not use_kernel:
                patch.setattr(tree_kernel, "available", lambda: False)
            counts, complete = circuit.zero_counts(), circuit.zero_counts()
            ll = circuit.accumulate_counts(x, counts)
            complete_ll = pc.accumulate_complete_counts(circuit, x, z, complete)
            results.append((ll, counts, complete_ll, complete))
    (ll, counts, complete_ll, complete), expected = results[1], results[0]
    torch.testing.assert_close(ll, expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(complete_ll, expected[2], rtol=1e-5, atol=1e-5)
    for got, reference in ((counts, expected[1]), (complete, expected[3])):
        for name in got:
            torch.testing.assert_close(got[name], reference[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """The kernel module with an empty cache folder under ``tmp_path`` and nothing loaded yet."""
    monkeypatch.setenv("HMMLVD_CACHE", str(tmp_path / "cache"))                      # kernels go in cache/kernels
    monkeypatch.setattr(tree_kernel, "_library", None)
    monkeypatch.setattr(tree_kernel, "_tried", False)
    return tmp_path / "cache" / "kernels"


def test_build_is_cached(fresh_kernel, monkeypatch):
    assert tree_kernel.load() is not None
    built = list(fresh_kernel.glob("tree_kernel-*.so"))
    assert len(built) == 1 and not list(fresh_kernel.glob(".build-*"))
    monkeypatch.setattr(tree_kernel, "_tried", False)

    def no_build(*args):
        raise AssertionError("the cached library was built again")
    monkeypatch.setattr(tree_kernel, "build", no_build)
    assert tree_kernel.load() is not None
    assert list(fresh_kernel.glob("tree_kernel-*.so")) == built


def test_switched_off_runs_the_torch_code(monkeypatch):
    monkeypatch.setenv("HMMLVD_KERNELS", "0")
    assert not tree_kernel.available()

    def refuse(*args):
        raise AssertionError("the kernel ran though switched off")
    monkeypatch.setattr(tree_kernel, "upward", refuse)
    monkeypatch.setattr(tree_kernel, "downward", refuse)
    leaf, transitions, root, root_flows = tree_inputs(TREES["chain"], 2, 3, 4, torch.float32)
    passed = upward(plan_tree(TREES["chain"]), leaf.permute(2, 0, 1, 3), transitions, root)
    downward(plan_tree(TREES["chain"]), passed, transitions, root, root_flows)


def test_failed_build_warns_once_and_falls_back(fresh_kernel, tmp_path, monkeypatch):
    compiler = tmp_path / "broken-cc"
    compiler.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo broken 1.0; exit 0; fi\n"
                        "echo 'no, not today' >&2\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert not tree_kernel.available()
    assert not tree_kernel.available()                               # no second attempt, no second warning
    assert not any(name.endswith(".so") for name in os.listdir(fresh_kernel))
    leaf, transitions, root, _ = tree_inputs(TREES["star"], 2, 3, 4, torch.float32)
    passed = upward(plan_tree(TREES["star"]), leaf.permute(2, 0, 1, 3), transitions, root)
    assert torch.isfinite(passed.log_likelihood).all()
