"""Save and load circuits as ``config.json`` (the node graph) + ``model.safetensors`` (parameters, edges)."""
from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_write_json, load_tensors, read_json, save_tensors
from .nodes import CategoricalInputNodes, GaussianInputNodes, Node, SumNodes, gaussian_inputs, inputs, multiply
from .nodes import summation, topological_order

FORMAT = "hmmlvd.pc.circuit"
VERSION = 1


def save_nodes(root: Node, directory: str | os.PathLike) -> None:
    """Write the circuit under ``root`` (with its node parameters) to ``directory``."""
    order = topological_order(root)
    index = {node.node_id: i for i, node in enumerate(order)}
    records, tensors = [], {}
    for i, node in enumerate(order):
        record = {"kind": node.kind, "name": node.name, "children": [index[c.node_id] for c in node.children]}
        if isinstance(node, CategoricalInputNodes):
            record.update(variable=node.variable, num_units=node.num_units, num_categories=node.num_categories,
                          fixed=node.fixed)
        elif isinstance(node, GaussianInputNodes):
            record.update(variable=node.variable, num_units=node.num_units, min_std=node.min_std, fixed=node.fixed)
        elif isinstance(node, SumNodes):
            record.update(num_units=node.num_units)
        else:
            tensors[f"edges.{i}"] = node.edges
        if getattr(node, "params", None) is not None:
            tensors[f"params.{i}"] = node.params
        records.append(record)
    directory = Path(directory)
    save_tensors(directory / "model.safetensors", tensors)
    atomic_write_json(directory / "config.json", {"format": FORMAT, "version": VERSION, "nodes": records})


def load_nodes(directory: str | os.PathLike) -> Node:
    """Rebuild the circuit written by :func:`save_nodes`; returns its root (validated on construction)."""
    directory = Path(directory)
    config = read_json(directory / "config.json")
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("nodes"), list):
        raise ValueError(f"{directory}/config.json is not a saved hmmlvd circuit (format {FORMAT!r})")
    tensors, _ = load_tensors(directory / "model.safetensors")
    nodes: list[Node] = []
    for i, record in enumerate(config["nodes"]):
        try:
            children = [nodes[c] for c in record["children"]]
            if any(c < 0 or c >= i for c in record["children"]):
                raise IndexError
            params = tensors.get(f"params.{i}")
            if params is not None and record["kind"] != "gaussian":
                params = params.double() / params.double().sum(-1, keepdim=True)
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
        nodes.append(node)
    if not nodes:
        raise ValueError(f"{directory}: the saved circuit has no nodes")
    return nodes[-1]
