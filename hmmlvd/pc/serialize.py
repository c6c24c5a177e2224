"""Save and load circuits as ``config.json`` (the node graph) + ``model.safetensors`` (parameters, edges)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..io import CONFIG_FILE, WEIGHTS_FILE, load_tensors, read_config, save_tensors, write_config
from .nodes import CategoricalInputNodes, GaussianInputNodes, Node, SumNodes, gaussian_inputs, inputs, multiply
from .nodes import summation, topological_order

MODEL_TYPE = "circuit"
FORMAT_VERSION = 1


def save_nodes(root: Node, directory: str | os.PathLike, parameters: dict[Node, Tensor] | None = None) -> None:
    """Write the circuit under ``root`` to ``directory``, with ``parameters[node]`` where given, else the
    node's own ``params`` (nodes without either are saved without parameters)."""
    parameters = parameters or {}
    order = topological_order(root)
    index = {node: i for i, node in enumerate(order)}
    records, tensors = [], {}
    for i, node in enumerate(order):
        record = {"kind": node.kind, "name": node.name, "children": [index[c] for c in node.children]}
        if isinstance(node, CategoricalInputNodes):
            record.update(variable=node.variable, num_units=node.num_units, num_categories=node.num_categories,
                          fixed=node.fixed)
        elif isinstance(node, GaussianInputNodes):
            record.update(variable=node.variable, num_units=node.num_units, min_std=node.min_std, fixed=node.fixed)
        elif isinstance(node, SumNodes):
            record.update(num_units=node.num_units)
        else:
            tensors[f"edges.{i}"] = node.edges
        params = parameters.get(node, getattr(node, "params", None))
        if params is not None:
            tensors[f"params.{i}"] = params
        records.append(record)
    directory = Path(directory)
    save_tensors(directory / WEIGHTS_FILE, tensors)
    write_config(directory, MODEL_TYPE, FORMAT_VERSION, {"nodes": records})


def _checked_params(params: Tensor | None, kind: str, label: str) -> Tensor | None:
    """Stored parameters as float64; categorical rows (sums, inputs) renormalised after checking they
    are finite and non-negative."""
    if params is None:
        return None
    if not params.is_floating_point():
        raise ValueError(f"{label}: params must be floating point, got {params.dtype}")
    params = params.double()
    if not bool(torch.isfinite(params).all()):
        raise ValueError(f"{label}: params contain NaN or infinite values")
    if kind == "gaussian":
        return params
    if bool((params < 0).any()):
        raise ValueError(f"{label}: params contain negative probabilities")
    if params.dim() != 2 or not bool((params.sum(-1) > 0).all()):
        raise ValueError(f"{label}: params must be [units, categories] rows with positive sums, "
                         f"got shape {tuple(params.shape)}")
    return params / params.sum(-1, keepdim=True)


def load_nodes(directory: str | os.PathLike) -> Node:
    """Rebuild the circuit written by :func:`save_nodes`; returns its root (validated on construction)."""
    directory = Path(directory)
    config = read_config(directory, MODEL_TYPE, FORMAT_VERSION)
    if not isinstance(config.get("nodes"), list) or not config["nodes"]:
        raise ValueError(f"{directory / CONFIG_FILE} lists no circuit nodes; it was not written by "
                         "Circuit.save_pretrained")
    tensors, _ = load_tensors(directory / WEIGHTS_FILE)
    nodes: list[Node] = []
    for i, record in enumerate(config["nodes"]):
        try:
            if any(c < 0 or c >= i for c in record["children"]):
                raise IndexError(f"children {record['children']} must be earlier nodes")
            children = [nodes[c] for c in record["children"]]
            params = _checked_params(tensors.get(f"params.{i}"), record["kind"], f"node {i}")
            if record["kind"] == "gaussian":
                node = gaussian_inputs(record["variable"], record["num_units"], params, min_std=record["min_std"],
                                       fixed=record["fixed"], name=record["name"])
            elif record["kind"] == "input":
                node = inputs(record["variable"], record["num_units"], record["num_categories"], params,
                              fixed=record["fixed"], name=record["name"])
            elif record["kind"] == "product":
                node = multiply(*children, edges=tensors[f"edges.{i}"], name=record["name"])
            elif record["kind"] == "sum":
                node = summation(children, record["num_units"], params, name=record["name"])
            else:
                raise KeyError(record["kind"])
        except (KeyError, IndexError, TypeError) as error:
            raise ValueError(f"{directory}: node {i} of the saved circuit is malformed ({error!r})") from None
        except ValueError as error:
            raise ValueError(f"{directory} does not hold a valid circuit: {error}") from None
        nodes.append(node)
    return nodes[-1]
