"""Latent variable distillation for patch circuits (paper Lemma 1 and Section 4), on ``hmmlvd.em.fit``.

With the patch latents observed, ``log p(x, z) = log p(z) + Σ_i log p(x_i | z_i)``: every sub-circuit (i, c) is
fitted by EM only on the patches assigned to cluster c, and ``p(Z)`` on the assignments. :func:`fit_lvd` runs
that fit, :func:`fit_latent_distribution` then fits ``p(Z)`` alone on each image's per-cluster patch
log-likelihoods (the paper's latent-distribution step), and ``em.fit(circuit, x, ...)`` fine-tunes everything.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..em import History, ParameterGroup, fit
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
