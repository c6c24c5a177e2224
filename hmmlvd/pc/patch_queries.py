"""Queries on a :class:`PatchCircuit`, the verbs of :mod:`hmmlvd.pc.queries` on the patch layout: exact
unconditional and conditional sampling (inpainting) of patches [B, P, D]."""
from __future__ import annotations

import torch
from torch import Tensor

from .patch_circuit import PatchCircuit
from .patch_lvd import assigned_forward
from .tree_pass import sample_categorical, sample_states


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
    cluster_ll = circuit.to_clusters(circuit.patch_forward(chunk)[0].log_likelihood, len(chunk))
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
