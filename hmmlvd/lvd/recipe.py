"""The end-to-end HMM recipe: an initial HMM (LVD or random), then two-phase mini-batch EM.

Both inits go through the same :func:`finetune`, so a comparison gives them the same budget.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from .. import em
from ..hmm import HMM, HMMConfig
from .distill import DistillConfig, DistillStats, distill

INITS = ("lvd", "random")


@dataclass(frozen=True)
class EMConfig:
    """Mini-batch EM with the paper's two phases (a constant step size, then a smaller one)."""

    phase1_epochs: int = 3
    phase1_step_size: float = 0.5
    phase2_epochs: int = 1
    phase2_step_size: float = 0.2
    batch_size: int = 8192
    pseudocount: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        self.schedule()  # validates epochs and step sizes
        if self.batch_size < 1 or self.pseudocount < 0:
            raise ValueError(f"batch_size must be >= 1 and pseudocount >= 0, got {self.batch_size}, "
                             f"{self.pseudocount}")

    def schedule(self) -> em.TwoPhase:
        return em.TwoPhase(self.phase1_epochs, self.phase1_step_size, self.phase2_epochs, self.phase2_step_size)


def initial_hmm(init: str, train_windows: Tensor, tokenizer, distill_config: DistillConfig, data_key: str,
                progress: bool = True) -> tuple[HMM, DistillStats | None]:
    """The HMM that EM starts from: LVD's closed-form fit, or random parameters (seeded)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "lvd":
        return distill(train_windows, tokenizer, distill_config, data_key, progress=progress)
    config = HMMConfig(distill_config.num_states, tokenizer.vocab_size, train_windows.shape[1])
    return HMM.random(config, seed=distill_config.seed), None


def finetune(hmm: HMM, train_windows: Tensor, config: EMConfig, checkpoint_dir: str | os.PathLike | None = None,
             resume: bool = False, valid_windows: Tensor | None = None, progress: bool = True,
             on_epoch_end=None) -> em.History:
    """Two-phase mini-batch EM on every training window, checkpointed after each epoch."""
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    return em.fit(hmm, train_windows, config.schedule(), batch_size=config.batch_size,
                  pseudocount=config.pseudocount, valid=valid_windows, checkpoint_dir=checkpoint_dir,
                  resume=resume, seed=config.seed, progress=progress, on_epoch_end=on_epoch_end)

