"""A compiled circuit: log-space forward pass, backward flows, and the ``hmmlvd.em`` EMModel protocol."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..em import GaussianGroup, ParameterGroup
from .evidence import Evidence, parse_evidence
from .layers import InputGroup, ProductLayer, SumGroup, SumLayer, plan_layers
from .nodes import CategoricalInputNodes, Node
from .semirings import SumProduct, evaluate
from .serialize import load_nodes, save_nodes


@dataclass
class ForwardPass:
    """Log values of every unit ``[num_rows, B]`` plus what the backward pass reuses."""

    values: Tensor
    inputs: Evidence
    input_cache: dict[int, tuple]       # id(input group) -> what its add_counts needs
    sum_cache: dict[int, tuple[Tensor, Tensor]]   # id(group) -> (shifted child probs [n,C,B], sums [n,U,B])


def _sum_group_backward(group: SumGroup, cache: tuple[Tensor, Tensor], flows: Tensor, counts: Tensor | None) -> None:
    """Pass the flows of ``group``'s units to its children (and add its expected edge counts ``[n, U, C]``)."""
    probs, sums = cache                                                        # [n, C, B], [n, U, B]
    tiny = torch.finfo(sums.dtype).tiny
    ratio = flows[group.start:group.start + group.num_rows].reshape(sums.shape) / sums.clamp_min(tiny)
    if counts is not None:
        counts += group.params * torch.bmm(ratio, probs.transpose(1, 2))
    child_flows = probs * torch.bmm(group.params.transpose(1, 2), ratio)
    flows.index_add_(0, group.child_rows.reshape(-1), child_flows.reshape(-1, child_flows.shape[-1]))


class Circuit:
    """A circuit compiled into layers of dense tensors.

    ``Circuit(root)`` plans the layers; parameters missing on nodes are drawn at random from
    ``seed`` into the compiled tensors (the nodes keep ``None``). ``log_likelihood(x)`` takes a
    LongTensor ``[B, num_variables]`` with ``-1`` for missing values (marginalised), a float tensor
    with NaN for missing values when the circuit has Gaussian inputs, or soft evidence
    ``[B, num_variables, K]`` (see :mod:`hmmlvd.pc.evidence`). The EM
    methods make ``hmmlvd.em.fit(circuit, data, schedule)`` train it; ``update_nodes()`` writes the
    trained parameters back into the node objects.
    """

    def __init__(self, root: Node, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        if not isinstance(root, Node):
            raise ValueError(f"root must be a node built by hmmlvd.pc (inputs/gaussian_inputs/multiply/summation), "
                             f"got {root!r}")
        if root.num_units != 1:
            raise ValueError(f"the root must have exactly one unit, got {root!r}; "
                             "add summation(root, 1) on top")
        self.root = root
        self.device = torch.device(device)
        self.dtype = dtype
        self.plan = plan_layers(root, seed=seed, dtype=dtype, device=self.device)
        self.root_row = self.plan.node_rows[root]
        self.num_variables = max(root.scope) + 1
        categories = torch.zeros(self.num_variables, dtype=torch.long)       # 0: Gaussian or outside the scope
        gaussian = torch.zeros(self.num_variables, dtype=torch.bool)
        kinds: dict[int, str] = {}
        for group in self.plan.input_groups:
            for node in group.nodes:
                categorical = isinstance(node, CategoricalInputNodes)
                kind = f"{node.num_categories}-category" if categorical else "Gaussian"
                if kinds.setdefault(node.variable, kind) != kind:
                    raise ValueError(f"variable {node.variable} has {kinds[node.variable]} input units and also "
                                     f"{kind} ones ({node!r}); use one kind of input (and one category count) "
                                     "per variable")
                if categorical:
                    categories[node.variable] = node.num_categories
                else:
                    gaussian[node.variable] = True
        self.num_categories = categories.to(self.device)
        self.gaussian_variables = gaussian.to(self.device)
        self._named_groups: dict[str, InputGroup | SumGroup] = {}
        for index, group in enumerate(self.plan.input_groups):
            if not group.fixed:
                self._named_groups[f"input{index}"] = group
        for depth, layer in enumerate(self.plan.layers):
            if isinstance(layer, SumLayer):
                for index, group in enumerate(layer.groups):
                    self._named_groups[f"sum{depth}_{index}"] = group

    # ------------------------------------------------------------------ inference
    def check_inputs(self, x: Tensor) -> Evidence:
        """Validate a batch of evidence (see :mod:`hmmlvd.pc.evidence` for the accepted forms)."""
        return parse_evidence(x, self.num_categories, self.gaussian_variables, dtype=self.dtype)

    def forward(self, x: Tensor | Evidence) -> ForwardPass:
        """Log value of every unit for the batch ``x`` (validated here unless already an ``Evidence``)."""
        evidence = x if isinstance(x, Evidence) else self.check_inputs(x)
        semiring = SumProduct()
        values = evaluate(self.plan, evidence, semiring, dtype=self.dtype, device=self.device)
        return ForwardPass(values, evidence, semiring.input_cache, semiring.sum_cache)

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
        for layer in reversed(self.plan.layers):
            match layer:
                case ProductLayer(start=start, child_rows=child_rows):
                    parents = flows[start:start + len(child_rows)].repeat_interleave(child_rows.shape[1], dim=0)
                    flows.index_add_(0, child_rows.reshape(-1), parents)
                case SumLayer(groups=groups):
                    for group in reversed(groups):
                        group_counts = counts[group_names[id(group)]] if counts is not None else None
                        _sum_group_backward(group, forward.sum_cache[id(group)], flows, group_counts)
        if counts is not None:
            for name, group in self._named_groups.items():
                if not isinstance(group, SumGroup):
                    group.add_counts(forward.input_cache[id(group)], flows[group.start:group.start + len(group)],
                                     counts[name])
        return flows

    # ------------------------------------------------------------------ EMModel protocol
    def parameter_groups(self) -> dict[str, ParameterGroup | GaussianGroup]:
        """Trainable groups: sum weights ``[n, U, C]`` (dim 2), categorical inputs ``[N, K]`` (dim 1) and
        Gaussian inputs ``[N, 2]``."""
        return {name: ParameterGroup(group.params, 2) if isinstance(group, SumGroup) else group.parameter_group()
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
        return {name: torch.zeros_like(group.params) if isinstance(group, SumGroup) else group.zero_counts()
                for name, group in self._named_groups.items()}

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
    def _parameters_by_node(self):
        """``(node, its parameters)`` for every parametrised node; the tensors are views into the groups."""
        for group in self.plan.input_groups:
            offset = 0
            for node in group.nodes:
                yield node, group.params[offset:offset + node.num_units]
                offset += node.num_units
        for group in self.plan.sum_groups:
            yield from zip(group.nodes, group.params)

    def node_parameters(self, node: Node) -> Tensor:
        """The current parameters of ``node`` (a view into the compiled tensors)."""
        for member, params in self._parameters_by_node():
            if member is node:
                return params
        raise ValueError(f"{node!r} has no parameters in this circuit (product node, or not under the root)")

    def update_nodes(self) -> None:
        """Copy the compiled parameters into the node objects (e.g. before recompiling); the only place
        where a circuit writes into its nodes."""
        for node, params in self._parameters_by_node():
            node.params = params.detach().cpu().clone()

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` (node graph) and ``model.safetensors`` (current parameters) atomically;
        the nodes are left as they are."""
        save_nodes(self.root, directory, dict(self._parameters_by_node()))

    @classmethod
    def from_pretrained(cls, directory, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "Circuit":
        """Load a circuit written by :meth:`save_pretrained`."""
        return cls(load_nodes(directory), device=device, dtype=dtype)

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters (sum edges plus input categories)."""
        return sum(group.params.numel() for group in self._named_groups.values())
