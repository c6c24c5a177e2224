"""Categorical hidden Markov models, non-homogeneous by default."""
from .config import HMMConfig
from .model import HMM

__all__ = ["HMM", "HMMConfig"]
