"""Latent variable distillation for patch circuits (paper Lemma 1 and Section 4), on ``hmmlvd.em.fit``.

With the patch latents observed, ``log p(x, z) = log p(z) + Σ_i log p(x_i | z_i)``: every sub-circuit (i, c) is
fitted by EM only on the patches assigned to cluster c, and ``p(Z)`` on the assignments. :func:`fit_lvd` runs
that fit, :func:`fit_latent_distribution` then fits ``p(Z)`` alone on each image's per-cluster patch
log-likelihoods (the paper's latent-distribution step), and ``em.fit(circuit, x, ...)`` fine-tunes everything.
:func:`fit_patch_states` gives Lemma 1 a distilled start one level down: every hidden state of every patch model
observed as a quantile bin of its value, and the patch models fitted to those in closed form.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..em import History, ParameterGroup, fit, normalize
from .patch_circuit import PatchCircuit

LATENT_GROUPS = ("latent_root", "latent_transitions", "latent_emissions")


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
        return self.circuit.accumulate_complete_counts(batch[..., :-1], batch[..., -1], counts)

    def log_likelihood(self, batch: Tensor) -> Tensor:
        return self.circuit.complete_log_likelihood(batch[..., :-1], batch[..., -1])


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
