"""Independent references for the patch circuit: the same circuit built from pc nodes, and a naive
per-node log-space recursion (float64, autograd gives the expected counts as θ·∂log p/∂θ)."""
from __future__ import annotations

import itertools

import torch

from hmmlvd import pc


def children_of(parents):
    children = [[] for _ in parents]
    for node, parent in enumerate(parents):
        if parent >= 0:
            children[parent].append(node)
    return children


def post_order(parents):
    children, order = children_of(parents), []

    def visit(node):
        for child in children[node]:
            visit(child)
        order.append(node)
    visit(list(parents).index(-1))
    return order


def transition_row(parents, node):
    root = list(parents).index(-1)
    return [v for v in range(len(parents)) if v != root].index(node)


def float64_params(circuit, requires_grad=False):
    return {name: group.values.detach().double().cpu().clone().requires_grad_(requires_grad)
            for name, group in circuit.parameter_groups().items()}


def node_circuit(circuit) -> pc.Circuit:
    """The patch circuit rebuilt unit by unit from ``pc.inputs/multiply/summation`` (variables i·D + d)."""
    config, params = circuit.config, float64_params(circuit)
    values, hidden, latent = config.values_per_patch, config.hidden_size, config.latent_hidden_size

    def patch_node(i, c):
        stack = 0 if config.tied else i
        children, built = children_of(config.value_parents), {}
        for v in post_order(config.value_parents):
            leaf = pc.inputs(i * values + v, hidden, config.num_categories,
                             params["patch_emissions"][stack, c, v].T.contiguous())
            messages = [pc.summation(built[child], hidden,
                                     params["patch_transitions"][stack, c, transition_row(config.value_parents, child)])
                        for child in children[v]]
            built[v] = pc.multiply(leaf, *messages) if messages else leaf
        return pc.summation(built[list(config.value_parents).index(-1)], 1, params["patch_root"][stack, c][None])

    children, built = children_of(config.latent_parents), {}
    for i in post_order(config.latent_parents):
        leaf = pc.summation([patch_node(i, c) for c in range(config.num_clusters)], latent,
                            params["latent_emissions"][i])
        messages = [pc.summation(built[child], latent,
                                 params["latent_transitions"][0, transition_row(config.latent_parents, child)])
                    for child in children[i]]
        built[i] = pc.multiply(leaf, *messages) if messages else leaf
    root = pc.summation(built[list(config.latent_parents).index(-1)], 1, params["latent_root"])
    return pc.Circuit(root, dtype=torch.float64)


def _tree_log(parents, leaf, transitions):
    """log value [H] of the root's subtree given its hidden state; ``leaf(v)`` [H], ``transitions(v)`` [H, H]."""
    children = children_of(parents)

    def subtree(v):
        out = leaf(v)
        for child in children[v]:
            below, weights = subtree(child), transitions(child)
            out = out + torch.stack([torch.logsumexp(weights[u].log() + below, 0) for u in range(len(weights))])
        return out
    return subtree(list(parents).index(-1))


def naive_patch_log(config, params, patch, i, c):
    """log p(x_i | z_i = c) of one patch (values -1 are missing)."""
    stack = 0 if config.tied else i
    emissions, hidden = params["patch_emissions"][stack, c], config.hidden_size

    def leaf(v):
        value = int(patch[v])
        return torch.zeros(hidden, dtype=torch.float64) if value < 0 else emissions[v, value].log()
    root_values = _tree_log(config.value_parents, leaf, lambda v: params["patch_transitions"][
        stack, c, transition_row(config.value_parents, v)])
    return torch.logsumexp(params["patch_root"][stack, c].log() + root_values, 0)


def naive_log_likelihood(config, params, x, z=None):
    """log p(x) per example (or log p(x, z) with assignments ``z``), node by node."""
    results = []
    for b in range(len(x)):
        patch_logs = [torch.stack([naive_patch_log(config, params, x[b, i], i, c) for c in range(config.num_clusters)])
                      for i in range(config.num_patches)]

        def leaf(i):
            emissions = params["latent_emissions"][i].log()                       # [Ht, k]
            if z is None:
                return torch.logsumexp(emissions + patch_logs[i][None], 1)
            return emissions[:, int(z[b, i])] + patch_logs[i][int(z[b, i])]
        root_values = _tree_log(config.latent_parents, leaf, lambda i: params["latent_transitions"][
            0, transition_row(config.latent_parents, i)])
        results.append(torch.logsumexp(params["latent_root"][0].log() + root_values, 0))
    return torch.stack(results)


def naive_counts(circuit, x, z=None):
    params = float64_params(circuit, requires_grad=True)
    logs = naive_log_likelihood(circuit.config, params, x, z)
    logs.sum().backward()
    return logs.detach(), {name: (p * p.grad).detach() for name, p in params.items()}


def all_patches(config):
    """Every complete input [K^(P·D), P, D]."""
    grid = itertools.product(range(config.num_categories), repeat=config.num_patches * config.values_per_patch)
    return torch.tensor(list(grid), dtype=torch.long).view(-1, config.num_patches, config.values_per_patch)
