"""Step-size schedules for mini-batch EM: small objects that give η per update."""
from __future__ import annotations

from dataclasses import dataclass


def _check_epochs(name: str, epochs: int) -> None:
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {epochs!r}")


def _check_step(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class Constant:
    """The same step size η for every update, for ``epochs`` epochs."""

    step_size: float = 1.0
    epochs: int = 1

    def __post_init__(self) -> None:
        _check_step("step_size", self.step_size)
        _check_epochs("epochs", self.epochs)

    @property
    def num_epochs(self) -> int:
        return self.epochs

    def __call__(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        return self.step_size


@dataclass(frozen=True)
class LinearAnneal:
    """η annealed linearly from ``start`` to ``end`` over all updates of ``epochs`` epochs."""

    start: float = 0.1
    end: float = 0.01
    epochs: int = 1

    def __post_init__(self) -> None:
        _check_step("start", self.start)
        _check_step("end", self.end)
        _check_epochs("epochs", self.epochs)

    @property
    def num_epochs(self) -> int:
        return self.epochs

    def __call__(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        total = max(self.epochs * steps_per_epoch - 1, 1)
        progress = min((epoch * steps_per_epoch + step) / total, 1.0)
        return self.start + (self.end - self.start) * progress


@dataclass(frozen=True)
class TwoPhase:
    """The paper's HMM recipe (Appendix C): a constant η for phase one, then a smaller one."""

    phase1_epochs: int = 20
    phase1_step_size: float = 1.0
    phase2_epochs: int = 5
    phase2_step_size: float = 0.1

    def __post_init__(self) -> None:
        _check_epochs("phase1_epochs", self.phase1_epochs)
        _check_epochs("phase2_epochs", self.phase2_epochs)
        _check_step("phase1_step_size", self.phase1_step_size)
        _check_step("phase2_step_size", self.phase2_step_size)

    @property
    def num_epochs(self) -> int:
        return self.phase1_epochs + self.phase2_epochs

    def __call__(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        return self.phase1_step_size if epoch < self.phase1_epochs else self.phase2_step_size
