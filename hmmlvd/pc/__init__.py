"""Probabilistic circuits on the shared EM core (paper Section 3).

    from hmmlvd import em, pc
    root = pc.structures.hclt(train, num_latents=32)          # or build with inputs/multiply/summation
    circuit = pc.Circuit(root)                                  # layered tensors, log-space forward
    em.fit(circuit, train, em.LinearAnneal(0.5, 0.05, 10), batch_size=256)
    circuit.log_likelihood(test)                                # -1 entries are marginalised
    pc.sample(circuit, 16); pc.conditional_marginals(circuit, evidence)
"""
from . import structures
from .circuit import Circuit, ForwardPass
from .materialize import MaterializedCircuit, materialize
from .nodes import InputNodes, Node, ProductNodes, SumNodes, inputs, multiply, outer_edges, summation, topological_order
from .queries import conditional_marginals, max_product_assignment, sample

__all__ = ["Circuit", "ForwardPass", "InputNodes", "MaterializedCircuit", "Node", "ProductNodes", "SumNodes",
           "conditional_marginals", "inputs", "materialize", "max_product_assignment", "multiply", "outer_edges",
           "sample", "structures", "summation", "topological_order"]
