"""hmmlvd: tractable language and image models trained by latent variable distillation."""
import importlib

from . import constraints, data, em, evaluate
from .hmm import HMM, HMMConfig
from .lm import LanguageModel

__all__ = ["constraints", "data", "em", "evaluate", "load", "lvd", "pc", "HMM", "HMMConfig", "LanguageModel"]


def __getattr__(name: str):
    # the heavier subpackages (encoders, circuits) load on first use
    if name in ("lvd", "pc"):
        return importlib.import_module(f"{__name__}.{name}")
    if name == "load":                     # imports every model type, circuits included
        return importlib.import_module(f"{__name__}.loading").load
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
