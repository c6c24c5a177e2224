"""Constraints as DFAs over token ids, and exact HMM x DFA inference for constrained generation."""
from .builders import all_of, any_of, contains_phrase, length_between, none_of
from .dfa import DFA, Edge, TokenSet, complement, intersect, union
from .generation import constraint_log_prob, sample_constrained
from .inference import ConstraintTables

__all__ = [
    "DFA", "Edge", "TokenSet", "complement", "intersect", "union",
    "all_of", "any_of", "contains_phrase", "length_between", "none_of",
    "ConstraintTables", "constraint_log_prob", "sample_constrained",
    "HMMConstraintLogitsProcessor",
]


def __getattr__(name: str):
    # transformers is imported only when the logits processor is asked for.
    if name == "HMMConstraintLogitsProcessor":
        from .logits_processor import HMMConstraintLogitsProcessor
        return HMMConstraintLogitsProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
