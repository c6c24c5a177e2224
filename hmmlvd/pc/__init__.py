"""Probabilistic circuits on the shared EM core (paper Section 3).

    from hmmlvd import em, pc
    root = pc.structures.hclt(train, num_latents=32)          # or build with inputs/multiply/summation
    circuit = pc.Circuit(root)                                  # layered tensors, log-space forward
    em.fit(circuit, train, em.LinearAnneal(0.5, 0.05, 10), batch_size=256)
    circuit.log_likelihood(test)                                # -1 entries are marginalised
    em.fit(circuit, pc.soften(train, 0.001), ...)               # data softening: EM on soft evidence
    pc.train_hclt(train, valid)                                 # hidden size, regularisation, epochs chosen on valid
    pc.sample(circuit, 16); pc.conditional_marginals(circuit, evidence)
    pc.max_product_assignment(circuit, evidence)                # MPE completion and its log score
    # a PatchCircuit takes the same verbs on patches [B, P, D] (-1 = missing): sample, conditional_marginals
    # ([B, P, D, K]), max_product_assignment (([B, P, D], [B]), max over the latents z and all hidden states)
"""
from . import structures
from .circuit import Circuit, ForwardPass
from .materialize import MaterializedCircuit, materialize
from .evidence import Evidence, empirical_marginals, soften
from .nodes import (CategoricalInputNodes, GaussianInputNodes, InputNodes, Node, ProductNodes, SumNodes,
                    gaussian_inputs, inputs, multiply, outer_edges, summation, topological_order)
from .patch_circuit import PatchCircuit, PatchCircuitConfig
from .patch_lvd import (CompleteDataView, LatentDistributionView, accumulate_complete_counts,
                        complete_log_likelihood, fit_latent_distribution, fit_lvd, fit_patch_states, patch_state_bins)
from .queries import conditional_marginals, conditional_moments, max_product_assignment, sample
from .recipe import HCLTRecipe, Regularization, TrainedHCLT, Trial, train_hclt

__all__ = ["CategoricalInputNodes", "Circuit", "Evidence", "ForwardPass", "GaussianInputNodes", "InputNodes",
           "HCLTRecipe", "MaterializedCircuit", "Node", "Regularization", "TrainedHCLT", "Trial", "ProductNodes",
           "SumNodes", "conditional_marginals", "conditional_moments",
           "empirical_marginals", "gaussian_inputs", "inputs", "materialize", "max_product_assignment", "multiply",
           "outer_edges", "sample", "soften", "structures", "summation", "topological_order", "train_hclt"]
__all__ += ["CompleteDataView", "LatentDistributionView", "PatchCircuit", "PatchCircuitConfig",
            "accumulate_complete_counts", "complete_log_likelihood",
            "fit_latent_distribution", "fit_lvd", "fit_patch_states", "patch_state_bins"]
