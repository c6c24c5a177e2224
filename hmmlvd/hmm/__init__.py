"""Categorical hidden Markov models, non-homogeneous by default."""
from .config import HMMConfig
from .model import HMM
from .sliding import sliding_log_probs

__all__ = ["HMM", "HMMConfig", "sliding_log_probs"]
