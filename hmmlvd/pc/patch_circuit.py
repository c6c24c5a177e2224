"""Patch circuits for images (paper Section 5): ``p(x) = Σ_z p(z_1..z_P) Π_i p(x_i | z_i)``.

``p(Z_1..Z_P)`` is an HCLT over the patch latents (hidden size ``latent_hidden_size``, k by default) whose leaf
for ``Z_i`` is replaced by the mixture ``Σ_c p(z_i = c | h_i) p(x_i | z_i = c)``; every ``p(X_i | Z_i = c)`` is an
HCLT over the patch's ``D`` values (hidden size ``hidden_size``), with its own parameters for every (i, c), or
with ``tied=True`` one shared set of k patch models. All sub-circuits share one value tree, so each tree node
is one batched GEMM over every (patch, cluster, example). It is one exact, normalised circuit, evaluated in
scaled probability space (:mod:`.tree_pass`); the EM methods make ``hmmlvd.em.fit(circuit, x, schedule)`` train
it on patches ``x`` [N, P, D].
"""
from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import Tensor

from ..em import NORMALIZATION_TOLERANCE, ParameterGroup, check_distributions
from ..io import CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_config, save_tensors, write_config
from .numerics import exp_normal
from .patch_config import PatchCircuitConfig
from .tree_pass import Leaves, TreePass, Workspace, downward, plan_tree, upward

MODEL_TYPE = "patch_circuit"
FORMAT_VERSION = 1
FOLDER_TYPES = (MODEL_TYPE, "patch_image_model")     # folders whose config.json holds a patch circuit's fields
CHUNK_ELEMENTS = 1 << 24        # values per buffer a chunk aims at (64 MiB in float32) ...
CHUNK_EXAMPLES = 32             # ... but at least this many examples (the latent pass's columns) ...
MAX_CHUNK_ELEMENTS = 1 << 27    # ... while a buffer stays within this (512 MiB in float32)


def _random_distributions(shape: tuple[int, ...], dim: int, generator: torch.Generator, device: torch.device,
                          dtype: torch.dtype) -> Tensor:
    values = (torch.rand(shape, generator=generator) + 0.05).to(device, dtype)
    return values / values.sum(dim, keepdim=True)


class PatchCircuit:
    """A patch circuit (see the module docstring) with parameters drawn from ``seed``.

    Batches are evaluated in chunks of at most about ``chunk_elements`` values per buffer, which bounds memory (one
    buffer of that size, the values, with the C kernel; two, values and messages, with the torch code). The passes
    work through each tree's rows in cache-sized blocks whatever the chunk. By default (None) a chunk holds
    :data:`CHUNK_ELEMENTS` values, or at least :data:`CHUNK_EXAMPLES` examples while that stays within
    :data:`MAX_CHUNK_ELEMENTS`: the latent pass and its count updates, whose cost per chunk grows with the latent
    hidden size squared, then run over many examples at once (bench/RESULTS.md).

    The circuit keeps these buffers from one call of :meth:`accumulate_counts` or :meth:`cluster_log_likelihoods`
    to the next (a :class:`.tree_pass.Workspace`): a fresh buffer would be paid again in page faults on every
    mini-batch (6 % of an EM step at k = 64, H = 16). So one circuit must not run two of these calls at once
    (from two threads).
    """

    def __init__(self, config: PatchCircuitConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, chunk_elements: int | None = None):
        if not isinstance(config, PatchCircuitConfig):
            raise ValueError(f"config must be a PatchCircuitConfig, got {config!r}")
        if chunk_elements is not None and chunk_elements < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        self.chunk_elements = chunk_elements
        self.value_plan = plan_tree(config.value_parents, self.device)
        self.latent_plan = plan_tree(config.latent_parents, self.device)
        generator = torch.Generator().manual_seed(seed)
        self._dims = {name: dim for name, (_, dim) in config.parameter_shapes().items()}
        self._params = {name: _random_distributions(shape, dim, generator, self.device, dtype)
                        for name, (shape, dim) in config.parameter_shapes().items()}
        self._tiny = torch.finfo(dtype).tiny
        self._workspace = Workspace()

    # ------------------------------------------------------------------ EMModel protocol
    def parameter_groups(self) -> dict[str, ParameterGroup]:
        return {name: ParameterGroup(values, self._dims[name]) for name, values in self._params.items()}

    def set_parameters(self, values: dict[str, Tensor]) -> None:
        for name, tensor in values.items():
            if name not in self._params:
                raise ValueError(f"unknown parameter group {name!r}; known: {sorted(self._params)}")
            if tensor.shape != self._params[name].shape:
                raise ValueError(f"{name}: expected shape {tuple(self._params[name].shape)}, got {tuple(tensor.shape)}")
            self._params[name] = tensor.to(device=self.device, dtype=self.dtype).contiguous()

    def zero_counts(self) -> dict[str, Tensor]:
        return {name: torch.zeros_like(values) for name, values in self._params.items()}

    def accumulate_counts(self, batch: Tensor, counts: dict[str, Tensor]) -> Tensor:
        """Add the expected counts of patches ``batch`` [B, P, D] into ``counts``; returns ``log p(x)`` [B]."""
        x, results = self.check_patches(batch), []
        with torch.no_grad():
            for part in self.chunks(len(x), self.grouped_size):
                passed = self.patch_forward(x[part], self._workspace)
                latent = self.latent_forward(self.to_clusters(passed.log_likelihood, len(x[part])))
                posterior = self.latent_backward(latent, counts)
                self.patch_backward(passed, self.from_clusters(posterior), counts, self._workspace)
                results.append(latent[0].log_likelihood[0])
        return torch.cat(results)

    def log_likelihood(self, batch: Tensor) -> Tensor:
        """``log p(x)`` [B] of patches ``batch`` [B, P, D] (``-1`` entries are marginalised)."""
        return self.latent_log_likelihood(self.cluster_log_likelihoods(batch))

    def expected_counts(self, batch: Tensor) -> dict[str, Tensor]:
        """Summed flows of ``batch`` for every parameter group, shaped like its parameters."""
        counts = self.zero_counts()
        self.accumulate_counts(batch, counts)
        return counts

    # ------------------------------------------------------------------ queries
    def cluster_log_likelihoods(self, batch: Tensor) -> Tensor:
        """``log p(x_i | z_i = c)`` as [B, P, k] for patches ``batch`` [B, P, D]."""
        x, results = self.check_patches(batch), []
        with torch.no_grad():
            for part in self.chunks(len(x), self.grouped_size):
                passed = self.patch_forward(x[part], self._workspace, keep_values=False)
                results.append(self.to_clusters(passed.log_likelihood, len(x[part])))
        return torch.cat(results)

    def latent_log_likelihood(self, cluster_log_likelihoods: Tensor) -> Tensor:
        """``log p(x)`` [B] from the cluster log-likelihoods [B, P, k] (see :meth:`cluster_log_likelihoods`)."""
        ll = self._check_cluster_log_likelihoods(cluster_log_likelihoods)
        with torch.no_grad():
            return self.latent_forward(ll)[0].log_likelihood[0].clone()

    def accumulate_latent_counts(self, cluster_log_likelihoods: Tensor, counts: dict[str, Tensor]) -> Tensor:
        """Expected counts of the latent groups only (the patch circuits held fixed); returns ``log p(x)`` [B]."""
        ll = self._check_cluster_log_likelihoods(cluster_log_likelihoods)
        with torch.no_grad():
            latent = self.latent_forward(ll)
            self.latent_backward(latent, counts)
            return latent[0].log_likelihood[0].clone()

    @property
    def num_sub_circuits(self) -> int:
        """G, the number of patch models: k when tied, P·k otherwise."""
        return self._stacks() * self.config.num_clusters

    def sub_circuits(self, assignments: Tensor) -> Tensor:
        """The sub-circuit of every patch [B, P] given its cluster ``assignments`` [B, P]: the cluster c when tied,
        else ``i·k + c`` for patch i (the order of the patch parameter tables' first two dimensions)."""
        if self.config.tied:
            return assignments
        return assignments + torch.arange(self.config.num_patches, device=assignments.device) * self.config.num_clusters

    # ------------------------------------------------------------------ validation
    def check_patches(self, batch: Tensor) -> Tensor:
        """``batch`` on the circuit's device as a LongTensor, after checking shape [B, P, D] and ids."""
        shape = (self.config.num_patches, self.config.values_per_patch)
        if (not isinstance(batch, Tensor) or batch.dtype.is_floating_point or batch.dtype == torch.bool
                or batch.dim() != 3 or tuple(batch.shape[1:]) != shape or len(batch) == 0):
            raise ValueError(f"patches must be a non-empty integer tensor [B, {shape[0]}, {shape[1]}] (patch values in "
                             f"patch order, -1 = missing), got {getattr(batch, 'dtype', type(batch))} "
                             f"{tuple(getattr(batch, 'shape', ()))}")
        if bool((batch < -1).any()) or bool((batch >= self.config.num_categories).any()):
            raise ValueError(f"patch values must be in [0, {self.config.num_categories}) or -1 for missing")
        return batch.to(self.device, torch.long)

    def check_assignments(self, assignments: Tensor, batch_size: int) -> Tensor:
        """``assignments`` on the circuit's device as a LongTensor, after the config's check of shape and ids."""
        return self.config.check_assignments(assignments, batch_size).to(self.device, torch.long)

    def _check_cluster_log_likelihoods(self, values: Tensor) -> Tensor:
        shape = (self.config.num_patches, self.config.num_clusters)
        if not isinstance(values, Tensor) or values.dim() != 3 or tuple(values.shape[1:]) != shape:
            raise ValueError(f"cluster log-likelihoods must be a float tensor [B, {shape[0]}, {shape[1]}], got "
                             f"{tuple(getattr(values, 'shape', ()))}")
        return values.to(self.device, self.dtype)

    # ------------------------------------------------------------------ passes
    def chunks(self, count: int, per_example: int) -> list[slice]:
        """Slices of ``count`` examples whose buffers hold about ``per_example`` values each (see the class)."""
        per_example = max(per_example, 1)
        if self.chunk_elements is not None:
            step = self.chunk_elements // per_example
        else:
            step = max(CHUNK_ELEMENTS // per_example, min(CHUNK_EXAMPLES, MAX_CHUNK_ELEMENTS // per_example))
        step = max(step, 1)
        return [slice(start, start + step) for start in range(0, count, step)]

    @property
    def grouped_size(self) -> int:
        """Buffer elements per example of a pass over every sub-circuit (what :meth:`chunks` divides by)."""
        config = self.config
        return config.num_patches * config.num_clusters * config.values_per_patch * config.hidden_size

    def _stacks(self) -> int:
        return 1 if self.config.tied else self.config.num_patches

    def patch_tables(self) -> tuple[Tensor, Tensor, Tensor]:
        """Root [G, H], transitions [G, D-1, H, H] and emissions [G, D, K, H] of the G = stacks·k sub-circuits."""
        config = self.config
        groups, hidden, values = self.num_sub_circuits, config.hidden_size, config.values_per_patch
        return (self._params["patch_root"].view(groups, hidden),
                self._params["patch_transitions"].view(groups, values - 1, hidden, hidden),
                self._params["patch_emissions"].view(groups, values, config.num_categories, hidden))

    def to_clusters(self, per_group: Tensor, batch_size: int) -> Tensor:
        """[G, M] values of every sub-circuit and column -> [B, P, k]."""
        patches, clusters = self.config.num_patches, self.config.num_clusters
        if self.config.tied:
            return per_group.view(clusters, patches, batch_size).permute(2, 1, 0)
        return per_group.view(patches, clusters, batch_size).permute(2, 0, 1)

    def from_clusters(self, values: Tensor) -> Tensor:
        """[B, P, k] -> [G, M] (the inverse of :meth:`to_clusters`)."""
        batch_size, patches, clusters = values.shape
        if self.config.tied:
            return values.permute(2, 1, 0).reshape(clusters, patches * batch_size)
        return values.permute(1, 2, 0).reshape(patches * clusters, batch_size)

    def patch_columns(self, x: Tensor) -> Tensor:
        """Patches ``x`` [B, P, D] (or any [B, P, D, ...] table) as the sub-circuits' columns [S, D, M, ...]: tied,
        one stack of M = P·B columns (column i·B + b); untied, P stacks of M = B columns (stack i: patch i)."""
        columns = x.transpose(0, 2).reshape(x.shape[2], self._stacks(), -1, *x.shape[3:]).transpose(0, 1)
        return columns.contiguous()

    def patch_leaves(self, x: Tensor) -> Leaves:
        """The leaves of every sub-circuit on every column of patches ``x`` [B, P, D]: its emission rows (sub-circuit
        g of stack g // k reads the columns of that stack, :meth:`patch_columns`)."""
        return Leaves(self.patch_tables()[2], self.patch_columns(x))

    def patch_forward(self, x: Tensor, workspace: Workspace | None = None, keep_values: bool = True) -> TreePass:
        """The upward pass of every sub-circuit on every column of patches ``x`` [B, P, D] (:meth:`patch_leaves`):
        values [G, D, M, H], contiguous, so a tree's rows of one node are consecutive. With a ``workspace`` the pass
        lives in its buffers (valid until the next pass given the same workspace). ``keep_values=False``: for
        likelihoods only; the C kernel then keeps no values (see :func:`.tree_pass.upward`)."""
        root, transitions, _ = self.patch_tables()
        return upward(self.value_plan, self.patch_leaves(x), transitions, root, workspace=workspace,
                      keep_values=keep_values)

    def patch_backward(self, passed: TreePass, root_flows: Tensor, counts: dict[str, Tensor],
                       workspace: Workspace | None = None) -> None:
        """Adds the patch models' counts given the flows ``root_flows`` [G, M] into their roots (the posterior of
        each sub-circuit)."""
        root, transitions, emissions = self.patch_tables()
        downward(self.value_plan, passed, transitions, root, root_flows,
                 transition_counts=counts["patch_transitions"].view(transitions.shape),
                 root_counts=counts["patch_root"].view(root.shape),
                 leaf_counts=counts["patch_emissions"].view(emissions.shape), workspace=workspace)

    def latent_forward(self, cluster_ll: Tensor) -> tuple[TreePass, Tensor, Tensor]:
        """The HCLT over the latents, its leaf for Z_i being the mixture over clusters of the patch likelihoods."""
        emissions = self._params["latent_emissions"]                                         # [P, Ht, k]
        per_patch = cluster_ll.transpose(0, 1)                                               # [P, B, k]
        shift = per_patch.amax(-1, keepdim=True)
        probs = exp_normal(per_patch - shift)           # no subnormals: exp and the GEMMs would crawl (numerics.py)
        sums = torch.matmul(probs, emissions.transpose(1, 2)).clamp_min_(self._tiny)         # [P, B, Ht]
        passed = upward(self.latent_plan, sums[None].clone(), self._params["latent_transitions"],
                        self._params["latent_root"], log_scale=shift.sum(0).T)
        return passed, probs, sums

    def latent_backward(self, latent: tuple[TreePass, Tensor, Tensor], counts: dict[str, Tensor]) -> Tensor:
        """Adds the latent counts; returns the posterior p(z_i = c | x) as [B, P, k]."""
        passed, probs, sums = latent
        emissions = self._params["latent_emissions"]
        ones = torch.ones_like(passed.log_likelihood)
        flows = downward(self.latent_plan, passed, self._params["latent_transitions"], self._params["latent_root"],
                         ones, transition_counts=counts["latent_transitions"], root_counts=counts["latent_root"])
        ratio = flows[0] / sums                                                              # [P, B, Ht]
        counts["latent_emissions"].addcmul_(emissions, torch.matmul(ratio.transpose(1, 2), probs))
        return (probs * torch.matmul(ratio, emissions)).transpose(0, 1)

    # ------------------------------------------------------------------ size and storage
    @property
    def num_parameters(self) -> int:
        return sum(values.numel() for values in self._params.values())

    @property
    def parameters(self) -> dict[str, Tensor]:
        """The parameter tables by group name (shapes in :meth:`PatchCircuitConfig.parameter_shapes`); read only."""
        return dict(self._params)

    def check_normalized(self, tolerance: float = NORMALIZATION_TOLERANCE, source: str = "this patch circuit") -> None:
        """Refuse non-finite or negative parameters and distributions whose sum is off 1 by more than ``tolerance``."""
        check_distributions(self.parameter_groups(), source, tolerance)

    def save_pretrained(self, directory: str | os.PathLike, *, model_type: str = MODEL_TYPE,
                        extra_fields: dict | None = None) -> None:
        """Write ``config.json`` (the config's fields, plus ``extra_fields`` of a model that wraps the circuit and
        saves as ``model_type``) and ``model.safetensors``, each atomically, to ``directory``."""
        directory = Path(directory)
        save_tensors(directory / WEIGHTS_FILE, self._params, {"model_type": model_type})
        write_config(directory, model_type, FORMAT_VERSION, {**asdict(self.config), **(extra_fields or {})})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, chunk_elements: int | None = None) -> "PatchCircuit":
        """Load a circuit written by :meth:`save_pretrained`, refusing files whose numbers are not distributions."""
        directory = Path(directory)
        stored = read_config(directory, FOLDER_TYPES, FORMAT_VERSION)
        names = {field.name for field in fields(PatchCircuitConfig)}
        try:
            config = PatchCircuitConfig(**{key: value for key, value in stored.items() if key in names})
        except TypeError as error:
            raise ValueError(f"{directory / CONFIG_FILE} lacks fields of a patch circuit: {error}") from None
        circuit = cls(config, device=device, dtype=dtype, chunk_elements=chunk_elements)
        tensors, _ = load_tensors(directory / WEIGHTS_FILE)
        if set(tensors) != set(circuit._params):
            raise ValueError(f"{directory / WEIGHTS_FILE} holds {sorted(tensors)}, expected {sorted(circuit._params)}")
        check_distributions({name: ParameterGroup(tensors[name], circuit._dims[name]) for name in tensors},
                            str(directory / WEIGHTS_FILE), NORMALIZATION_TOLERANCE)
        circuit.set_parameters(tensors)
        return circuit
