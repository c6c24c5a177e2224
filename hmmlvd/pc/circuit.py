"""A compiled circuit: log-space forward pass, backward flows, and the ``hmmlvd.em`` EMModel protocol."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..em import ParameterGroup
from .layers import InputGroup, ProductLayer, SumGroup, plan_layers
from .nodes import Node
from .serialize import load_nodes, save_nodes


@dataclass
class ForwardPass:
    """Log values of every unit ``[num_rows, B]`` plus what the backward pass reuses."""

    values: Tensor
    inputs: Tensor                      # [B, num_variables] the evidence
    input_states: dict[int, tuple[Tensor, Tensor]]   # id(input group) -> (clamped states [N,B], observed [N,B])
    sum_cache: dict[int, tuple[Tensor, Tensor]]   # id(group) -> (shifted child probs [n,C,B], sums [n,U,B])


def _gather(values: Tensor, rows: Tensor) -> Tensor:
    """``values[rows]`` for a 2-D index (index_select is much faster than advanced indexing on CPU)."""
    return values.index_select(0, rows.reshape(-1)).reshape(*rows.shape, values.shape[1])


class Circuit:
    """A circuit compiled into layers of dense tensors.

    ``Circuit(root)`` plans the layers; parameters missing on nodes are drawn at random from
    ``seed``. ``log_likelihood(x)`` takes a LongTensor ``[B, num_variables]`` with ``-1`` for
    missing values (marginalised). The EM methods make ``hmmlvd.em.fit(circuit, data, schedule)``
    train it; ``update_nodes()`` writes the trained parameters back into the node objects.
    """

    def __init__(self, root: Node, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        if not isinstance(root, Node):
            raise ValueError(f"root must be a node built by hmmlvd.pc (inputs/multiply/summation), got {root!r}")
        if root.num_units != 1:
            raise ValueError(f"the root must have exactly one unit, got {root!r}; "
                             "add summation(root, 1) on top")
        self.root = root
        self.device = torch.device(device)
        self.dtype = dtype
        self.input_groups, self.layers, self.node_rows, self.num_rows = plan_layers(
            root, seed=seed, dtype=dtype, device=self.device)
        self.root_row = self.node_rows[root.node_id]
        self.num_variables = max(root.scope) + 1
        categories = torch.zeros(self.num_variables, dtype=torch.long)
        for group in self.input_groups:
            for node in group.nodes:
                if categories[node.variable] not in (0, node.num_categories):
                    raise ValueError(f"variable {node.variable} has input units with {int(categories[node.variable])} "
                                     f"and {node.num_categories} categories ({node!r}); use one category count per variable")
                categories[node.variable] = node.num_categories
        self.num_categories = categories.to(self.device)
        unused = torch.iinfo(torch.long).max                          # variables outside the scope take any value
        self._category_limits = torch.where(categories > 0, categories, unused).to(self.device)
        self._named_groups: dict[str, InputGroup | SumGroup] = {}
        for index, group in enumerate(self.input_groups):
            if not group.fixed:
                self._named_groups[f"input{index}"] = group
        for depth, layer in enumerate(self.layers):
            if not isinstance(layer, ProductLayer):
                for index, group in enumerate(layer):
                    self._named_groups[f"sum{depth}_{index}"] = group

    # ------------------------------------------------------------------ inference
    def check_inputs(self, x: Tensor) -> Tensor:
        """Validate a batch ``[B, num_variables]`` of category ids (``-1`` = missing)."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.num_variables:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected a LongTensor [batch, {self.num_variables}] of category ids, got {shape}")
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise ValueError(f"inputs must be integer category ids (LongTensor), got dtype {x.dtype}")
        x = x.to(device=self.device, dtype=torch.long)
        if len(x) and ((x < -1).any() or (x >= self._category_limits).any()):
            raise ValueError("inputs must lie in [0, num_categories) per variable, or be -1 for missing; "
                             f"per-variable category counts are {self.num_categories.tolist()[:16]}...")
        return x

    def forward(self, x: Tensor) -> ForwardPass:
        """Log value of every unit for the batch ``x`` (validated)."""
        x = self.check_inputs(x)
        values = torch.empty(self.num_rows, len(x), dtype=self.dtype, device=self.device)
        values[0] = 0.0                                                # every other row is written below
        by_variable = x.T.contiguous()
        input_states = {}
        for group in self.input_groups:
            states = by_variable.index_select(0, group.variables)          # [N, B]
            observed = states >= 0
            states = states.clamp_min_(0)
            input_states[id(group)] = (states, observed)
            log_params = group.params.clamp_min(torch.finfo(self.dtype).tiny).log()
            logs = torch.gather(log_params, 1, states)
            values[group.start:group.start + len(group.variables)] = logs.masked_fill_(~observed, 0.0)
        cache: dict[int, tuple[Tensor, Tensor]] = {}
        for layer in self.layers:
            if isinstance(layer, ProductLayer):
                values[layer.start:layer.start + len(layer.child_rows)] = _gather(values, layer.child_rows).sum(1)
                continue
            for group in layer:
                children = _gather(values, group.child_rows)                  # [n, C, B]
                shift = children.amax(1, keepdim=True)
                shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
                probs = torch.exp(children - shift)
                sums = torch.bmm(group.params, probs)                        # [n, U, B]
                cache[id(group)] = (probs, sums)
                rows = sums.shape[0] * sums.shape[1]
                values[group.start:group.start + rows] = (sums.log() + shift).reshape(rows, -1)
        return ForwardPass(values, x, input_states, cache)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(x)`` per example ``[B]`` (missing entries marginalised)."""
        with torch.no_grad():
            return self.forward(x).values[self.root_row].clone()

    def backward(self, forward: ForwardPass, counts: dict[str, Tensor] | None = None) -> Tensor:
        """Flows ``[num_rows, B]``: ∂ log p(x) / ∂ log value of each unit, i.e. ``p(unit active | x)``.

        With ``counts``, adds the expected counts (summed flows) of every trainable group into it.
        """
        flows = torch.zeros_like(forward.values)
        flows[self.root_row] = 1.0
        group_names = {id(group): name for name, group in self._named_groups.items()}
        tiny = torch.finfo(self.dtype).tiny
        for layer in reversed(self.layers):
            if isinstance(layer, ProductLayer):
                parents = flows[layer.start:layer.start + len(layer.child_rows)]
                fan_in = layer.child_rows.shape[1]
                flows.index_put_((layer.child_rows.reshape(-1),), parents.repeat_interleave(fan_in, dim=0),
                                 accumulate=True)
                continue
            for group in reversed(layer):
                probs, sums = forward.sum_cache[id(group)]
                n, units, _ = sums.shape
                ratio = flows[group.start:group.start + n * units].reshape(n, units, -1) / sums.clamp_min(tiny)
                if counts is not None:
                    counts[group_names[id(group)]] += group.params * torch.bmm(ratio, probs.transpose(1, 2))
                child_flows = probs * torch.bmm(group.params.transpose(1, 2), ratio)
                flows.index_put_((group.child_rows.reshape(-1),), child_flows.reshape(-1, child_flows.shape[-1]),
                                 accumulate=True)
        if counts is not None:
            for name, group in self._named_groups.items():
                if isinstance(group, InputGroup):
                    self._add_input_counts(group, forward, flows, counts[name])
        return flows

    def _add_input_counts(self, group: InputGroup, forward: ForwardPass, flows: Tensor, counts: Tensor) -> None:
        """Add the expected counts of one input group into ``counts``; missing values add nothing (as in the HMM)."""
        states, observed = forward.input_states[id(group)]
        unit_flows = flows[group.start:group.start + len(group.variables)]
        counts.scatter_add_(1, states, (unit_flows * observed).to(counts.dtype))

    # ------------------------------------------------------------------ EMModel protocol
    def parameter_groups(self) -> dict[str, ParameterGroup]:
        """Trainable categorical groups: sum weights ``[n, U, C]`` (dim 2), inputs ``[N, K]`` (dim 1)."""
        return {name: ParameterGroup(group.params, group.params.dim() - 1)
                for name, group in self._named_groups.items()}

    def set_parameters(self, values: dict[str, Tensor]) -> None:
        for name, tensor in values.items():
            if name not in self._named_groups:
                raise ValueError(f"unknown parameter group {name!r}; known: {sorted(self._named_groups)}")
            group = self._named_groups[name]
            if tensor.shape != group.params.shape:
                raise ValueError(f"{name}: expected shape {tuple(group.params.shape)}, got {tuple(tensor.shape)}")
            group.params = tensor.to(device=self.device, dtype=self.dtype)

    def zero_counts(self) -> dict[str, Tensor]:
        return {name: torch.zeros_like(group.params) for name, group in self._named_groups.items()}

    def accumulate_counts(self, batch: Tensor, counts: dict[str, Tensor]) -> Tensor:
        """Add the expected counts of ``batch`` into ``counts``; returns ``log p(x)`` per example."""
        with torch.no_grad():
            forward = self.forward(batch)
            self.backward(forward, counts)
            return forward.values[self.root_row].clone()

    def expected_counts(self, x: Tensor) -> dict[str, Tensor]:
        """Summed flows of ``x`` for every trainable group, shaped like its parameters."""
        counts = self.zero_counts()
        self.accumulate_counts(x, counts)
        return counts

    # ------------------------------------------------------------------ parameters and nodes
    def node_parameters(self, node: Node) -> Tensor:
        """The current parameters of ``node`` (a view into the compiled tensors)."""
        for group in self._all_parameter_groups():
            for index, member in enumerate(group.nodes):
                if member is node:
                    if isinstance(group, SumGroup):
                        return group.params[index]
                    offset = sum(other.num_units for other in group.nodes[:index])
                    return group.params[offset:offset + node.num_units]
        raise ValueError(f"{node!r} has no parameters in this circuit (product node, or not under the root)")

    def update_nodes(self) -> None:
        """Copy the compiled parameters back into the node objects (e.g. before recompiling)."""
        for group in self._all_parameter_groups():
            for node in group.nodes:
                node.params = self.node_parameters(node).detach().cpu().clone()

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` (node graph) and ``model.safetensors`` (current parameters) atomically."""
        self.update_nodes()
        save_nodes(self.root, directory)

    @classmethod
    def from_pretrained(cls, directory, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "Circuit":
        """Load a circuit written by :meth:`save_pretrained`."""
        return cls(load_nodes(directory), device=device, dtype=dtype)

    def _all_parameter_groups(self):
        yield from self.input_groups
        for layer in self.layers:
            if not isinstance(layer, ProductLayer):
                yield from layer

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters (sum edges plus input categories)."""
        return sum(group.params.numel() for group in self._named_groups.values())
