"""Queries on a :class:`PatchCircuit`, the verbs of :mod:`hmmlvd.pc.queries` on the patch layout: exact
unconditional and conditional sampling (inpainting) of patches [B, P, D], conditional marginals [B, P, D, K] and
the max-product (MPE) completion.

The patch trees' columns follow :meth:`PatchCircuit.patch_columns`: ``S`` stacks (1 when tied, else P) of ``k``
sub-circuits each (G = S·k), ``M`` columns per sub-circuit (P·B when tied, column ``i·B + b``; B otherwise), so a
per-column table ``[S, D, M]`` reads ``[D, P, B]`` once its first two dimensions are swapped."""
from __future__ import annotations

import torch
from torch import Tensor

from .patch_circuit import PatchCircuit
from .patch_lvd import assigned_forward
from .tree_pass import argmax_states, downward, max_upward, sample_categorical, sample_states


def sample(circuit: PatchCircuit, num_samples: int | None = None, *, evidence: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Patches [N, P, D]: ``num_samples`` unconditional samples, or ``evidence`` [B, P, D] with its ``-1`` entries
    drawn exactly from p(missing | observed) (inpainting) and its observed entries kept."""
    config = circuit.config
    if (num_samples is None) == (evidence is None):
        raise ValueError("pass exactly one of num_samples (unconditional) or evidence= (conditional)")
    if evidence is None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        evidence = torch.full((num_samples, config.num_patches, config.values_per_patch), -1, dtype=torch.long)
    x, results = circuit.check_patches(evidence), []
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        for part in circuit.chunks(len(x), circuit.grouped_size):
            results.append(_sample_chunk(circuit, x[part], generator))
    return torch.cat(results)


def _sample_chunk(circuit: PatchCircuit, chunk: Tensor, generator: torch.Generator) -> Tensor:
    """Top-down: the latent HCLT's states, then every Z_i given them and its patch, then the patch model's
    states given Z_i and the observed values, then the missing values given their states."""
    config, tables = circuit.config, circuit.parameters
    tiny = torch.finfo(circuit.dtype).tiny
    cluster_ll = circuit.to_clusters(circuit.patch_forward(chunk).log_likelihood, len(chunk))
    latent = circuit.latent_forward(cluster_ll)
    hidden = sample_states(circuit.latent_plan, latent[0], tables["latent_transitions"], tables["latent_root"],
                           generator)[0]                                                       # [P, B]
    log_emissions = tables["latent_emissions"].clamp_min(tiny).log()                              # [P, Ht, k]
    rows = torch.gather(log_emissions, 1, hidden[..., None].expand(-1, -1, config.num_clusters))
    z = sample_categorical(rows + cluster_ll.transpose(0, 1), generator).T                      # [B, P]
    patches = assigned_forward(circuit, chunk, z)
    states = sample_states(circuit.value_plan, patches.passed, patches.transitions, patches.root,
                           generator)                                                          # [nb, D, W]
    states = states[patches.column_block, :, patches.column_slot]                                # [C, D]
    values = chunk.reshape(-1, config.values_per_patch).clone()
    column, variable = (values < 0).nonzero(as_tuple=True)
    table = tables["patch_emissions"].view(-1, config.num_categories, config.hidden_size)
    logits = table[patches.groups[column] * config.values_per_patch + variable, :, states[column, variable]]
    values[column, variable] = sample_categorical(logits.clamp_min(tiny).log(), generator)
    return values.view_as(chunk)


def _to_patches(circuit: PatchCircuit, columns: Tensor, batch_size: int) -> Tensor:
    """[S, D, M, ...] -> [B, P, D, ...] (the inverse of :meth:`PatchCircuit.patch_columns`)."""
    per_patch = columns.transpose(0, 1).reshape(columns.shape[1], circuit.config.num_patches, batch_size,
                                                *columns.shape[3:])
    return per_patch.transpose(0, 2)


def conditional_marginals(circuit: PatchCircuit, evidence: Tensor) -> Tensor:
    """``p(x_{b,i,j} = v | evidence_b)`` as [B, P, D, K] for patches ``evidence`` [B, P, D] (``-1`` = missing);
    observed entries get a one-hot row. From the flows: the latent pass gives ``p(z_i = c | e)``, the patch trees'
    downward pass from those roots the posterior of every patch hidden state, and a missing value's marginal is
    ``Σ_{c,h} flow(c, h) · p(x_{ij} = v | h)``, one GEMM [M, k·H] @ [k·H, K] per stack and position."""
    x, results = circuit.check_patches(evidence), []
    with torch.no_grad():
        for part in circuit.chunks(len(x), circuit.grouped_size):
            results.append(_marginals_chunk(circuit, x[part]))
    return torch.cat(results)


def _marginals_chunk(circuit: PatchCircuit, chunk: Tensor) -> Tensor:
    """:func:`conditional_marginals` of one chunk [B, P, D] -> [B, P, D, K]."""
    config, tables = circuit.config, circuit.parameters
    clusters, values, hidden = config.num_clusters, config.values_per_patch, config.hidden_size
    one_hot = torch.nn.functional.one_hot(chunk.clamp_min(0), config.num_categories).to(circuit.dtype)
    passed = circuit.patch_forward(chunk)
    if passed.leaves.missing() is None:
        return one_hot
    latent = circuit.latent_forward(circuit.to_clusters(passed.log_likelihood, len(chunk)))
    scratch = {name: torch.zeros_like(tables[name]) for name in ("latent_root", "latent_transitions",
                                                                 "latent_emissions")}
    posterior = circuit.latent_backward(latent, scratch)                                      # [B, P, k]
    root, transitions, _ = circuit.patch_tables()
    flows = downward(circuit.value_plan, passed, transitions, root, circuit.from_clusters(posterior))
    stacks = len(root) // clusters
    by_stack = flows.view(stacks, clusters, values, -1, hidden)                               # [S, k, D, M, H]
    emissions = tables["patch_emissions"]                                                     # [S, k, D, K, H]
    per_position = []
    for j in range(values):
        mass = by_stack[:, :, j].transpose(1, 2).reshape(stacks, -1, clusters * hidden)      # [S, M, k·H]
        table = emissions[:, :, j].transpose(2, 3).reshape(stacks, clusters * hidden, -1)    # [S, k·H, K]
        per_position.append(torch.bmm(mass, table))
    marginals = _to_patches(circuit, torch.stack(per_position, 1), len(chunk))                 # [B, P, D, K]
    return torch.where(chunk[..., None] >= 0, one_hot, marginals)


def max_product_assignment(circuit: PatchCircuit, evidence: Tensor) -> tuple[Tensor, Tensor]:
    """The completion of patches ``evidence`` [B, P, D] (``-1`` = missing) that maximises the joint over the missing
    values *and* every latent choice (the patch latents z, the latent HCLT's and every patch tree's hidden states):
    ``(assignment [B, P, D], best log score [B])``, observed entries kept. Max-product upward over the patch trees
    (a missing value's leaf is ``max_v`` of its emission), then over the latent HCLT, then argmax top-down.
    Chunks hold H times fewer examples than a likelihood pass (the max over a [.., H, H] temporary)."""
    x, completed, scores = circuit.check_patches(evidence), [], []
    with torch.no_grad():
        for part in circuit.chunks(len(x), circuit.grouped_size * circuit.config.hidden_size):
            assignment, score = _mpe_chunk(circuit, x[part])
            completed.append(assignment)
            scores.append(score)
    return torch.cat(completed), torch.cat(scores)


def _mpe_chunk(circuit: PatchCircuit, chunk: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`max_product_assignment` of one chunk [B, P, D]."""
    config, tables = circuit.config, circuit.parameters
    clusters, values, hidden = config.num_clusters, config.values_per_patch, config.hidden_size
    tiny = torch.finfo(circuit.dtype).tiny
    leaves = circuit.patch_leaves(chunk)
    columns = leaves.index                                                                     # [S, D, M]
    stacks, width = columns.shape[0], columns.shape[2]
    best_emission, best_value = tables["patch_emissions"].max(3)                               # [S, k, D, H]
    root, transitions, _ = circuit.patch_tables()
    leaf = leaves.gather(root.new_empty(len(root), values, width, hidden)).log_()
    leaf = leaf.view(stacks, clusters, values, width, hidden)
    missing = (columns < 0)[:, None, :, :, None]
    leaf = torch.where(missing, best_emission.clamp_min(tiny).log()[:, :, :, None], leaf)
    patch_values, patch_best = max_upward(circuit.value_plan, leaf.view(-1, values, width, hidden), transitions, root)
    z, score = _latent_mpe(circuit, circuit.to_clusters(patch_best, len(chunk)))              # [B, P], [B]
    states = argmax_states(circuit.value_plan, patch_values, transitions, root)               # [G, D, M]
    chosen = z.T.reshape(stacks, 1, 1, width)                                                  # column order
    states = torch.gather(states.view(stacks, clusters, values, width), 1,
                          chosen.expand(-1, -1, values, -1))[:, 0]                             # [S, D, M]
    stack = torch.arange(stacks, device=circuit.device)[:, None, None]
    position = torch.arange(values, device=circuit.device)[None, :, None]
    filled = best_value[stack, chosen[:, 0], position, states]                                 # [S, D, M]
    return _to_patches(circuit, torch.where(columns >= 0, columns, filled), len(chunk)), score


def _latent_mpe(circuit: PatchCircuit, patch_best: Tensor) -> tuple[Tensor, Tensor]:
    """Given every patch's best log score per cluster [B, P, k]: the best cluster of every patch [B, P] and the
    best log score [B], by max-product over the latent HCLT (its leaf for Z_i: max over c)."""
    tables = circuit.parameters
    transitions, root = tables["latent_transitions"], tables["latent_root"]
    tiny = torch.finfo(circuit.dtype).tiny
    log_emissions = tables["latent_emissions"].clamp_min(tiny).log()                  # [P, Ht, k]
    leaf, choice = (patch_best.transpose(0, 1)[:, :, None, :] + log_emissions[:, None]).max(-1)  # [P, B, Ht]
    values, best = max_upward(circuit.latent_plan, leaf[None], transitions, root)
    hidden = argmax_states(circuit.latent_plan, values, transitions, root)[0]                 # [P, B]
    return torch.gather(choice, 2, hidden[..., None])[..., 0].T, best[0]
