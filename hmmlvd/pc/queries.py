"""Queries on a compiled circuit: conditional marginals, sampling and max-product (MPE) assignments."""
from __future__ import annotations

import torch
from torch import Tensor

from . import patch_queries
from .circuit import Circuit
from .evidence import Evidence
from .input_layers import CategoricalInputGroup, GaussianInputGroup, choose
from .layers import ProductLayer, SumGroup, SumLayer, gather_rows
from .patch_circuit import PatchCircuit
from .semirings import MaxProduct, evaluate


def _hard_evidence(circuit: Circuit, x: Tensor, query: str) -> Evidence:
    """``x`` validated for ``circuit``; soft evidence is refused with a message naming ``query``."""
    evidence = circuit.check_inputs(x)
    evidence.require_hard(query)
    return evidence


def conditional_marginals(circuit: Circuit | PatchCircuit, evidence: Tensor) -> Tensor:
    """``p(x_i = c | evidence)`` as ``[B, num_variables, max_categories]``.

    ``evidence`` is ``[B, num_variables]`` with ``-1`` (or NaN) for unobserved variables; observed variables
    get a one-hot row. Variables outside the circuit's scope, and Gaussian variables (see
    :func:`conditional_moments`), get zeros. Uses the flows: ``p(x_i = c | e) = Σ_u flow(u) θ_u[c]`` over
    the input units ``u`` of ``x_i``. A :class:`PatchCircuit` takes patches [B, P, D] and gives [B, P, D, K]
    (see :func:`hmmlvd.pc.patch_queries.conditional_marginals`).
    """
    if isinstance(circuit, PatchCircuit):
        return patch_queries.conditional_marginals(circuit, evidence)
    if int(circuit.num_categories.max()) == 0:
        raise ValueError("this circuit has no categorical variables; use pc.conditional_moments for Gaussian ones")
    with torch.no_grad():
        forward = circuit.forward(_hard_evidence(circuit, evidence, "conditional_marginals"))
        flows = circuit.backward(forward)
        x = forward.inputs.ids
        batch, num_vars = x.shape
        width = int(circuit.num_categories.max())
        result = torch.zeros(batch * num_vars, width, dtype=circuit.dtype, device=circuit.device)
        examples = torch.arange(batch, device=circuit.device)
        for group in circuit.plan.input_groups:
            if not isinstance(group, CategoricalInputGroup):
                continue
            unit_flows = flows[group.start:group.start + len(group.variables)]         # [N, B]
            mass = unit_flows.T[..., None] * group.params[None]                          # [B, N, K]
            rows = (examples[:, None] * num_vars + group.variables[None]).reshape(-1)
            padded = torch.zeros(batch * len(group.variables), width, dtype=circuit.dtype, device=circuit.device)
            padded[:, :group.params.shape[1]] = mass.reshape(-1, group.params.shape[1])
            result.index_put_((rows,), padded, accumulate=True)
        result = result.reshape(batch, num_vars, width)
        observed = (x >= 0) & (circuit.num_categories > 0)           # variables outside the scope stay all-zero
        one_hot = torch.zeros_like(result).scatter_(2, x.clamp(0, width - 1)[..., None], 1.0)
        return torch.where(observed[..., None], one_hot, result)


def conditional_moments(circuit: Circuit, evidence: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance ``[B, num_variables]`` of ``p(x_i | evidence)`` for every Gaussian variable.

    ``evidence`` is a float tensor with NaN for unobserved values. ``p(x_i | e)`` is the mixture
    ``Σ_u flow(u) N(μ_u, σ_u²)`` over the Gaussian input units ``u`` of ``x_i``. Observed variables get
    their value and variance 0; variables that are not Gaussian get NaN.
    """
    if not bool(circuit.gaussian_variables.any()):
        raise ValueError("this circuit has no Gaussian inputs; use pc.conditional_marginals for categorical ones")
    with torch.no_grad():
        forward = circuit.forward(evidence)
        flows = circuit.backward(forward)
        values = forward.inputs.values                                                 # [B, V]
        first = torch.zeros(values.shape[1], values.shape[0], dtype=circuit.dtype, device=circuit.device)
        second = torch.zeros_like(first)
        for group in circuit.plan.input_groups:
            if isinstance(group, GaussianInputGroup):
                unit_flows = flows[group.start:group.start + len(group)]              # [N, B]
                mean, std = group.params[:, :1], group.params[:, 1:]
                first.index_add_(0, group.variables, unit_flows * mean)
                second.index_add_(0, group.variables, unit_flows * (std ** 2 + mean ** 2))
        mean, variance = first.T, (second - first ** 2).T.clamp_min(0)
        observed = ~torch.isnan(values)
        mean = torch.where(observed, values, mean)
        variance = torch.where(observed, torch.zeros_like(variance), variance)
        not_gaussian = ~circuit.gaussian_variables
        return mean.masked_fill(not_gaussian, float("nan")), variance.masked_fill(not_gaussian, float("nan"))


def _top_down(circuit: Circuit, evidence: Evidence, values: Tensor, generator: torch.Generator | None) -> Tensor:
    """Walk from the root choosing one child per active sum unit and one value per missing variable.

    With a ``generator`` choices are sampled ∝ ``θ · value(child)``; without one they are argmax.
    Every node has at most one active unit per example (decomposability), so each sum group chooses
    for ``[n, B]`` active units at once. Returns ids (LongTensor), or real values (float) when the
    circuit has Gaussian inputs.
    """
    batch = len(evidence)
    active = torch.zeros(circuit.plan.num_rows, batch, dtype=torch.bool, device=circuit.device)
    active[circuit.root_row] = True
    for layer in reversed(circuit.plan.layers):
        match layer:
            case ProductLayer(start=start, child_rows=child_rows):
                unit, example = active[start:start + len(child_rows)].nonzero(as_tuple=True)
                active[child_rows[unit].reshape(-1), example.repeat_interleave(child_rows.shape[1])] = True
                active[0] = False                                                  # the padding row
            case SumLayer(groups=groups):
                for group in groups:
                    _choose_children(group, values, active, generator)
    real = evidence.values is not None
    result = evidence.values.clone() if real else evidence.ids.clone()
    for group in circuit.plan.input_groups:
        unit, example = active[group.start:group.start + len(group)].nonzero(as_tuple=True)
        variable = group.variables[unit]
        missing = torch.isnan(result[example, variable]) if real else result[example, variable] < 0
        unit, example, variable = unit[missing], example[missing], variable[missing]
        chosen = group.complete(unit, generator)
        result[example, variable] = chosen.to(result.dtype)
    return result


def _choose_children(group: SumGroup, values: Tensor, active: Tensor, generator: torch.Generator | None) -> None:
    """Mark, for every active unit of ``group``, the child it chooses (sampled or argmax) as active."""
    n, units, fan_in = group.params.shape
    batch = active.shape[1]
    unit_active = active[group.start:group.start + n * units].reshape(n, units, batch)
    chosen_unit = unit_active.to(torch.uint8).argmax(1)                                # [n, B]
    log_weights = group.params.clamp_min(torch.finfo(group.params.dtype).tiny).log()
    rows = torch.gather(log_weights, 1, chosen_unit[..., None].expand(n, batch, fan_in))  # [n, B, C]
    child_values = gather_rows(values, group.child_rows).transpose(1, 2)               # [n, B, C]
    child = choose(rows + child_values, generator)                                     # [n, B]
    child_rows = torch.gather(group.child_rows, 1, child)                              # [n, B]
    is_active = unit_active.any(1)
    columns = torch.arange(batch, device=active.device).expand(n, batch)
    active[child_rows[is_active], columns[is_active]] = True


def sample(circuit: Circuit | PatchCircuit, num_samples: int | None = None, *, evidence: Tensor | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Samples ``[N, num_variables]``: unconditional (``num_samples``) or given ``evidence``
    (``-1``/NaN entries are drawn from ``p(missing | observed)``, observed entries are kept).
    Circuits with Gaussian inputs give float samples; a :class:`PatchCircuit` takes and gives patches [N, P, D]."""
    if isinstance(circuit, PatchCircuit):
        return patch_queries.sample(circuit, num_samples, evidence=evidence, generator=generator)
    if (num_samples is None) == (evidence is None):
        raise ValueError("pass exactly one of num_samples (unconditional) or evidence= (conditional)")
    if evidence is None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        evidence = (torch.full((num_samples, circuit.num_variables), float("nan"), dtype=circuit.dtype)
                    if bool(circuit.gaussian_variables.any()) else
                    torch.full((num_samples, circuit.num_variables), -1, dtype=torch.long))
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        forward = circuit.forward(_hard_evidence(circuit, evidence, "sample"))
        return _top_down(circuit, forward.inputs, forward.values, generator)


def max_product_assignment(circuit: Circuit | PatchCircuit, evidence: Tensor) -> tuple[Tensor, Tensor]:
    """Complete ``evidence`` (``-1`` = missing) by max-product: ``(assignment, best log score)``.

    The score is ``max`` over the missing variables *and* the circuit's latent choices of the joint,
    which is the exact MPE for deterministic circuits (and Viterbi for an HMM circuit). A :class:`PatchCircuit`
    takes patches [B, P, D] and gives ``(assignment [B, P, D], score [B])``, the max over its latents z and every
    hidden state (see :func:`hmmlvd.pc.patch_queries.max_product_assignment`).
    """
    if isinstance(circuit, PatchCircuit):
        return patch_queries.max_product_assignment(circuit, evidence)
    with torch.no_grad():
        evidence = _hard_evidence(circuit, evidence, "max_product_assignment")
        values = evaluate(circuit.plan, evidence, MaxProduct(), dtype=circuit.dtype, device=circuit.device)
        return _top_down(circuit, evidence, values, None), values[circuit.root_row].clone()
