"""hmmlvd: tractable language and image models trained by latent variable distillation."""
from . import em
from .hmm import HMM, HMMConfig

__all__ = ["em", "HMM", "HMMConfig"]
