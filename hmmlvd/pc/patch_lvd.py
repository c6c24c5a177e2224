"""Latent variable distillation for patch circuits (paper Lemma 1 and Section 4), on ``hmmlvd.em.fit``.

With the patch latents observed, ``log p(x, z) = log p(z) + Σ_i log p(x_i | z_i)``: every sub-circuit (i, c) is
fitted by EM only on the patches assigned to cluster c, and ``p(Z)`` on the assignments. :func:`fit_lvd` runs
that fit, :func:`fit_latent_distribution` then fits ``p(Z)`` alone on each image's per-cluster patch
log-likelihoods (the paper's latent-distribution step), and ``em.fit(circuit, x, ...)`` fine-tunes everything.
:func:`fit_patch_states` gives Lemma 1 a distilled start one level down: every hidden state of every patch model
observed as a quantile bin of its value, and the patch models fitted to those in closed form.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..em import History, ParameterGroup, fit, normalize
from .patch_circuit import PatchCircuit
from .tree_pass import Leaves, TreePass, downward, upward

LATENT_GROUPS = ("latent_root", "latent_transitions", "latent_emissions")


class AssignedPass(NamedTuple):
    """Every patch through its own assigned sub-circuit (:func:`assigned_forward`): ``nb`` blocks of ``W`` columns,
    each block one sub-circuit's (``block_group`` [nb]); ``used`` [nb, W] is 1 where a slot holds a real column."""

    passed: TreePass
    column_ll: Tensor                         # [C] log p(x_column | its sub-circuit), columns b-major
    groups: Tensor                            # [C] the sub-circuit of every column
    column_block: Tensor                      # [C] where every column sits: block ...
    column_slot: Tensor                       # [C] ... and slot
    block_group: Tensor
    transitions: Tensor                       # [nb, D-1, H, H]
    root: Tensor                              # [nb, H]
    used: Tensor


def complete_log_likelihood(circuit: PatchCircuit, batch: Tensor, assignments: Tensor) -> Tensor:
    """``log p(x, z)`` [B] of patches [B, P, D] with their cluster assignments [B, P] (Lemma 1)."""
    return accumulate_complete_counts(circuit, batch, assignments, None)


def accumulate_complete_counts(circuit: PatchCircuit, batch: Tensor, assignments: Tensor,
                               counts: dict[str, Tensor] | None) -> Tensor:
    """The complete-data counts of ``(x, z)``: each patch feeds only its own (i, z_i) sub-circuit and ``p(Z)``
    sees the assignments. Adds them into ``counts`` (when given); returns ``log p(x, z)`` [B]."""
    config = circuit.config
    x, z = circuit.check_patches(batch), circuit.check_assignments(assignments, len(batch))
    per_example = config.num_patches * config.values_per_patch * config.hidden_size          # its [C, D, H] buffer
    results = []
    with torch.no_grad():
        for part in circuit.chunks(len(x), per_example):
            patches = assigned_forward(circuit, x[part], z[part])
            latent = _observed_latent_forward(circuit, z[part])
            if counts is not None:
                _observed_latent_backward(circuit, latent, z[part], counts)
                _assigned_backward(circuit, patches, counts)
            per_patch = patches.column_ll.view(len(x[part]), -1)
            results.append(latent.log_likelihood[0] + per_patch.sum(1))
    return torch.cat(results)


def assigned_forward(circuit: PatchCircuit, x: Tensor, z: Tensor) -> AssignedPass:
    """Each column (example, patch) of ``x`` [B, P, D], b-major, through its own sub-circuit (``z`` [B, P]) only.

    Columns are sorted by sub-circuit and cut into blocks of at most ``ceil(C / G)`` columns, each block
    belonging to one sub-circuit, so the pass is one batched tree pass over at most 2·G blocks whatever the
    cluster sizes, with each sub-circuit's parameters gathered once per block rather than once per column."""
    config, device = circuit.config, circuit.device
    values = config.values_per_patch
    groups = circuit.sub_circuits(z).reshape(-1)                                                    # [C]
    flat = x.reshape(-1, values)                                                                      # [C, D]
    num_groups = circuit.num_sub_circuits
    width = -(-len(flat) // num_groups)
    order = torch.argsort(groups, stable=True)
    sizes = torch.bincount(groups, minlength=num_groups)
    blocks_per_group = -(-sizes // width)
    block_group = torch.repeat_interleave(torch.arange(num_groups, device=device), blocks_per_group)
    sorted_groups = groups[order]
    rank = torch.arange(len(flat), device=device) - (torch.cumsum(sizes, 0) - sizes)[sorted_groups]
    block = (torch.cumsum(blocks_per_group, 0) - blocks_per_group)[sorted_groups] + rank // width
    slot = rank % width
    columns = torch.full((len(block_group), width, values), -1, dtype=flat.dtype, device=device)
    columns[block, slot] = flat[order]
    columns = columns.transpose(1, 2).contiguous()                                                    # [nb, D, W]
    root, transitions, emissions = circuit.patch_tables()
    transitions, root = transitions.index_select(0, block_group), root.index_select(0, block_group)
    passed = upward(circuit.value_plan, Leaves(emissions, columns, block_group), transitions, root)
    column_block, column_slot = torch.empty_like(block), torch.empty_like(slot)
    column_block[order], column_slot[order] = block, slot
    used = torch.zeros(len(block_group), width, dtype=passed.log_likelihood.dtype, device=device)
    used[block, slot] = 1.0
    return AssignedPass(passed, passed.log_likelihood[column_block, column_slot], groups, column_block,
                        column_slot, block_group, transitions, root, used)


def _assigned_backward(circuit: PatchCircuit, patches: AssignedPass, counts: dict[str, Tensor]) -> None:
    transition_counts, root_counts = torch.zeros_like(patches.transitions), torch.zeros_like(patches.root)
    own_root, own_transitions, own_emissions = circuit.patch_tables()
    downward(circuit.value_plan, patches.passed, patches.transitions, patches.root, patches.used,
             transition_counts=transition_counts, root_counts=root_counts,
             leaf_counts=counts["patch_emissions"].view(own_emissions.shape))
    counts["patch_transitions"].view(own_transitions.shape).index_add_(0, patches.block_group, transition_counts)
    counts["patch_root"].view(own_root.shape).index_add_(0, patches.block_group, root_counts)


def _observed_latent_forward(circuit: PatchCircuit, z: Tensor) -> TreePass:
    """The HCLT over the latents with every Z_i observed."""
    tables = circuit.parameters
    emissions = tables["latent_emissions"].transpose(1, 2)                                             # [P, k, Ht]
    per_patch = z.T[..., None].expand(-1, -1, circuit.config.latent_hidden_size)                      # [P, B, Ht]
    leaf = torch.gather(emissions, 1, per_patch).clamp_min_(torch.finfo(circuit.dtype).tiny)
    return upward(circuit.latent_plan, leaf[None].contiguous(), tables["latent_transitions"], tables["latent_root"])


def _observed_latent_backward(circuit: PatchCircuit, passed: TreePass, z: Tensor, counts: dict[str, Tensor]) -> None:
    tables = circuit.parameters
    flows = downward(circuit.latent_plan, passed, tables["latent_transitions"], tables["latent_root"],
                     torch.ones_like(passed.log_likelihood), transition_counts=counts["latent_transitions"],
                     root_counts=counts["latent_root"])[0]                                    # [P, B, Ht]
    index = z.T[:, None, :].expand(-1, circuit.config.latent_hidden_size, -1)                 # [P, Ht, B]
    counts["latent_emissions"].scatter_add_(2, index, flows.transpose(1, 2))


class CompleteDataView:
    """The ``em.EMModel`` of ``log p(x, z)``: batches are [B, P, D + 1], patch values followed by the assignment."""

    def __init__(self, circuit: PatchCircuit):
        self.circuit = circuit

    def parameter_groups(self) -> dict[str, ParameterGroup]:
        return self.circuit.parameter_groups()

    def set_parameters(self, values: dict[str, Tensor]) -> None:
        self.circuit.set_parameters(values)

    def zero_counts(self) -> dict[str, Tensor]:
        return self.circuit.zero_counts()

    def accumulate_counts(self, batch: Tensor, counts: dict[str, Tensor]) -> Tensor:
        return accumulate_complete_counts(self.circuit, batch[..., :-1], batch[..., -1], counts)

    def log_likelihood(self, batch: Tensor) -> Tensor:
        return complete_log_likelihood(self.circuit, batch[..., :-1], batch[..., -1])


class LatentDistributionView:
    """The ``em.EMModel`` of ``p(Z)`` alone, the patch circuits held fixed: batches are the cluster
    log-likelihoods [B, P, k] of :meth:`PatchCircuit.cluster_log_likelihoods`."""

    def __init__(self, circuit: PatchCircuit):
        self.circuit = circuit

    def parameter_groups(self) -> dict[str, ParameterGroup]:
        groups = self.circuit.parameter_groups()
        return {name: groups[name] for name in LATENT_GROUPS}

    def set_parameters(self, values: dict[str, Tensor]) -> None:
        self.circuit.set_parameters(values)

    def zero_counts(self) -> dict[str, Tensor]:
        return {name: torch.zeros_like(group.values) for name, group in self.parameter_groups().items()}

    def accumulate_counts(self, batch: Tensor, counts: dict[str, Tensor]) -> Tensor:
        return self.circuit.accumulate_latent_counts(batch, counts)

    def log_likelihood(self, batch: Tensor) -> Tensor:
        return self.circuit.latent_log_likelihood(batch)


def complete_data(x: Tensor, z: Tensor) -> Tensor:
    """Patches [N, P, D] and assignments [N, P] joined as the [N, P, D + 1] batches of :class:`CompleteDataView`."""
    if not isinstance(x, Tensor) or not isinstance(z, Tensor) or x.dim() != 3 or tuple(z.shape) != tuple(x.shape[:2]):
        raise ValueError(f"x must be patches [N, P, D] and z assignments [N, P]; got {tuple(getattr(x, 'shape', ()))} "
                         f"and {tuple(getattr(z, 'shape', ()))}")
    return torch.cat([x.to(torch.int32), z.to(torch.int32)[..., None]], dim=2)


def fit_lvd(circuit: PatchCircuit, x: Tensor, z: Tensor, schedule, *, valid: tuple[Tensor, Tensor] | None = None,
            **fit_options) -> History:
    """Lemma 1: maximise ``Σ log p(x, z)`` by EM (``em.fit`` options: batch_size, pseudocount, checkpoint_dir,
    resume, ...). ``valid`` is ``(x_valid, z_valid)``; the history holds mean ``log p(x, z)`` per image."""
    valid_data = complete_data(*valid) if valid is not None else None
    return fit(CompleteDataView(circuit), complete_data(x, z), schedule, valid=valid_data, **fit_options)


def fit_latent_distribution(circuit: PatchCircuit, x: Tensor, schedule, *, valid: Tensor | None = None,
                            **fit_options) -> History:
    """Fit ``p(Z)`` on ``x`` [N, P, D] with the patch circuits fixed: their cluster log-likelihoods are computed
    once ([N, P, k] in memory), then EM runs on them. The history holds mean ``log p(x)`` per image."""
    cluster_ll = circuit.cluster_log_likelihoods(x)
    valid_ll = circuit.cluster_log_likelihoods(valid) if valid is not None else None
    return fit(LatentDistributionView(circuit), cluster_ll, schedule, valid=valid_ll, **fit_options)


def patch_state_bins(circuit: PatchCircuit, x: Tensor, z: Tensor) -> Tensor:
    """Hidden states [N, P, D] for patches ``x`` [N, P, D] assigned to clusters ``z`` [N, P]: value ``v`` at
    position ``j`` of a patch whose sub-circuit is ``g`` gets ``min(H - 1, floor(H · F(v)))``, ``F`` the mid-point
    CDF of the values at ``j`` over all of g's patches. These are H quantile bins of each value, one per
    sub-circuit and position; a value holding much of the mass keeps a single bin, so some states may go unused."""
    return _quantile_bins(circuit, _value_cells(circuit, x, z)[1]).view(x.shape)


def _quantile_bins(circuit: PatchCircuit, cells: Tensor) -> Tensor:
    """:func:`patch_state_bins` of the value cells [N·P, D] of :func:`_value_cells`."""
    config = circuit.config
    histogram = torch.bincount(cells.reshape(-1), minlength=circuit.num_sub_circuits * config.values_per_patch
                               * config.num_categories).view(circuit.num_sub_circuits, config.values_per_patch, -1)
    histogram = histogram.double()
    below = histogram.cumsum(2) - histogram
    midpoint = (below + histogram / 2) / histogram.sum(2, keepdim=True).clamp_min(1.0)
    table = (midpoint * config.hidden_size).floor().long().clamp_(max=config.hidden_size - 1)
    return table.view(-1)[cells]


def fit_patch_states(circuit: PatchCircuit, x: Tensor, z: Tensor, states: Tensor | None = None, *,
                     pseudocount: float = 0.1) -> Tensor:
    """Fit every patch model in closed form with its hidden states observed (latent materialisation one level
    below the patch latents): patches ``x`` [N, P, D] of clusters ``z`` [N, P] with states ``states`` [N, P, D]
    (default :func:`patch_state_bins`). Root, transition and emission tables become the normalised counts (plus
    ``pseudocount``, spread as in ``em.normalize``); rows without counts (e.g. the emissions of a state no patch
    uses) keep their values, so unused states stay distinct. ``p(Z)`` is untouched: Lemma 1 (:func:`fit_lvd`) then
    fits it and refines these tables with the states marginalised again. Returns the states."""
    config = circuit.config
    groups, cells = _value_cells(circuit, x, z)
    if states is None:
        states = _quantile_bins(circuit, cells)
    elif (not isinstance(states, Tensor) or states.dtype.is_floating_point or states.shape != x.shape
            or int(states.min()) < 0 or int(states.max()) >= config.hidden_size):
        raise ValueError(f"states must be an integer tensor [N, P, D] = {tuple(x.shape)} of hidden states in "
                         f"0..{config.hidden_size - 1}, got {tuple(getattr(states, 'shape', ()))}")
    else:
        states = states.reshape(cells.shape).to(cells.device)
    num_groups, hidden, parents = circuit.num_sub_circuits, config.hidden_size, config.value_parents
    emissions = torch.bincount((cells * hidden + states).reshape(-1), minlength=num_groups * config.values_per_patch
                               * config.num_categories * hidden)
    root = parents.index(-1)
    transitions = torch.stack([
        torch.bincount((groups * hidden + states[:, parents[node]]) * hidden + states[:, node],
                       minlength=num_groups * hidden * hidden).view(num_groups, hidden, hidden)
        for node in range(config.values_per_patch) if node != root], dim=1)                # [G, D-1, H, H]
    counts = {"patch_emissions": (emissions.view(num_groups, config.values_per_patch, -1, hidden), 2),
              "patch_transitions": (transitions, 3),
              "patch_root": (torch.bincount(groups * hidden + states[:, root], minlength=num_groups * hidden)
                             .view(num_groups, hidden), 1)}
    fitted, parameter_groups = {}, circuit.parameter_groups()
    for name, (table, dim) in counts.items():
        current = parameter_groups[name].values
        table = table.double()
        observed = table.sum(dim, keepdim=True) > 0
        fitted[name] = torch.where(observed, normalize(table, dim, pseudocount),
                                   current.reshape(table.shape).double()).view(current.shape)
    circuit.set_parameters(fitted)
    return states.view(x.shape)


def _value_cells(circuit: PatchCircuit, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """After checking the inputs: the sub-circuit of every patch [N·P] (:meth:`PatchCircuit.sub_circuits`) and the
    cell (sub-circuit, position, value) of every value [N·P, D], an index into a [G, D, categories] table."""
    config = circuit.config
    x = circuit.check_patches(x)
    z = circuit.check_assignments(z, len(x))
    if bool((x < 0).any()):
        raise ValueError("the patches have missing values (negative entries); patch states need complete patches")
    groups = circuit.sub_circuits(z).reshape(-1)
    position = torch.arange(config.values_per_patch, device=x.device)
    cells = (groups[:, None] * config.values_per_patch + position) * config.num_categories + x.reshape(len(groups), -1)
    return groups, cells
