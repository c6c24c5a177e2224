"""The EM core shared by every model: one M-step, step-size schedules and the training loop."""
from .mstep import (GaussianGroup, ParameterGroup, apply_m_step, entropy_regularized_normalize, gaussian_m_step,
                    m_step, normalize)
from .schedules import Constant, LinearAnneal, TwoPhase
from .checkpoint import Checkpoint, History
from .trainer import EMModel, epoch_order, fit, mean_log_likelihood
from .validation import NORMALIZATION_TOLERANCE, check_distributions

__all__ = ["GaussianGroup", "ParameterGroup", "apply_m_step", "entropy_regularized_normalize", "gaussian_m_step",
           "m_step", "normalize", "Constant", "LinearAnneal", "TwoPhase", "Checkpoint", "EMModel", "History",
           "epoch_order", "fit", "mean_log_likelihood", "NORMALIZATION_TOLERANCE", "check_distributions"]
