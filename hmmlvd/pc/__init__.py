"""Probabilistic circuits on the shared EM core (paper Section 3)."""
from .circuit import Circuit, ForwardPass
from .nodes import InputNodes, Node, ProductNodes, SumNodes, inputs, multiply, outer_edges, summation, topological_order

__all__ = ["Circuit", "ForwardPass", "InputNodes", "Node", "ProductNodes", "SumNodes", "inputs", "multiply",
           "outer_edges", "summation", "topological_order"]
