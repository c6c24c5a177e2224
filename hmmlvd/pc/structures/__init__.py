"""Circuit structures: HCLT, RAT-SPN and the HMM as a circuit."""
from .hclt import chow_liu_tree, hclt, hclt_from_tree, mutual_information
from .hmm import HMMCircuit, hmm_circuit
from .patch import patch_trees
from .rat_spn import rat_spn

__all__ = ["chow_liu_tree", "hclt", "hclt_from_tree", "mutual_information", "HMMCircuit", "hmm_circuit",
           "patch_trees", "rat_spn"]
