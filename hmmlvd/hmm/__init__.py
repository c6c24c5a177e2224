"""Categorical hidden Markov models, non-homogeneous by default."""
from .config import HMMConfig
from .filtering import filter_step, next_token_log_probs, state_distribution
from .model import HMM
from .sampling import check_sampling_options, choose_tokens, sample_continuations
from .sliding import sliding_log_probs

__all__ = ["HMM", "HMMConfig", "check_sampling_options", "choose_tokens", "filter_step", "next_token_log_probs",
           "sample_continuations", "sliding_log_probs", "state_distribution"]
