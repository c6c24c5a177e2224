"""HCLT training that tunes its own regularisation on the validation split (no per-dataset hand tuning).

Each setting of a small grid, ordered from weak to strong regularisation, trains the same initial circuit
by mini-batch EM (linearly annealed step size) and then full-batch EM with early stopping, keeping the
parameters of the epoch with the best validation log-likelihood; the search stops at the first setting that
does worse on validation than the best so far. The returned circuit holds the best-on-validation parameters of
the best setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import em
from .circuit import Circuit
from .evidence import empirical_marginals, soften
from .structures import hclt


@dataclass(frozen=True)
class Regularization:
    """One grid point: ``pseudocount`` (every M-step, in count units), data ``softening`` strength and the
    ``entropy_weight`` τ of the full-batch M-steps (count units of the whole training split)."""

    pseudocount: float
    softening: float = 0.0
    entropy_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.pseudocount >= 0 or not self.entropy_weight >= 0:
            raise ValueError(f"pseudocount and entropy_weight must be >= 0, got {self}")
        if not 0.0 <= self.softening < 1.0:
            raise ValueError(f"softening must be in [0, 1), got {self.softening}")


#: The fixed recipe tuned on the five shared DEBD datasets (bench/RESULTS.md), then stronger settings.
DEFAULT_GRID = (Regularization(0.01), Regularization(0.1, 0.001, 0.1), Regularization(1.0, 0.005, 1.0),
                Regularization(4.0, 0.02, 4.0))


@dataclass(frozen=True)
class HCLTRecipe:
    """Structure, EM budget and search space of :func:`train_hclt`.

    ``patience``: the full-batch phase stops after this many epochs without a better validation
    log-likelihood. The mini-batch phase always runs its whole annealed schedule: while the step size is large
    its validation log-likelihood is noisy (on plants it stalled for 10 epochs at η ≈ 0.4 and stopping there cost
    0.66 nats), so only its best epoch is kept.
    """

    num_latents: int = 32
    num_trees: int = 1
    minibatch_epochs: int = 60
    fullbatch_epochs: int = 5
    batch_size: int = 256
    step_start: float = 0.5
    step_end: float = 0.02
    patience: int = 10
    grid: tuple[Regularization, ...] = DEFAULT_GRID
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("num_latents", "num_trees", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_epochs < 0 or self.fullbatch_epochs < 0 or self.minibatch_epochs + self.fullbatch_epochs < 1:
            raise ValueError("minibatch_epochs and fullbatch_epochs must be >= 0 with at least one epoch in all")
        if not 0 < self.step_end <= 1 or not 0 < self.step_start <= 1:
            raise ValueError(f"step sizes must be in (0, 1], got {self.step_start} -> {self.step_end}")
        if not self.grid or not all(isinstance(point, Regularization) for point in self.grid):
            raise ValueError("grid must be a non-empty tuple of Regularization settings")


@dataclass
class Trial:
    """What one grid point did: per-epoch validation LL of each phase and its best epoch."""

    setting: Regularization
    valid_curves: dict[str, list[float]] = field(default_factory=dict)
    best_valid: float = -float("inf")
    best_epoch: str = ""


@dataclass
class TrainedHCLT:
    """The trained ``circuit`` (best-on-validation parameters), the ``chosen`` setting and every ``trials``."""

    circuit: Circuit
    chosen: Regularization
    best_valid: float
    best_epoch: str
    trials: list[Trial]


class _StopPhase(Exception):
    """Raised from an epoch callback to end an EM phase early."""


class _EntropyRegularized:
    """An EM model that forwards to ``circuit`` but asks for entropy-regularised categorical M-steps."""

    def __init__(self, circuit: Circuit, entropy_weight: float):
        self.circuit, self.entropy_weight = circuit, entropy_weight

    def parameter_groups(self) -> dict:
        return {name: replace(group, entropy_weight=self.entropy_weight) if isinstance(group, em.ParameterGroup)
                else group for name, group in self.circuit.parameter_groups().items()}

    def __getattr__(self, name: str):
        return getattr(self.circuit, name)


def train_hclt(train: Tensor, valid: Tensor, recipe: HCLTRecipe = HCLTRecipe(), *,
               progress: bool = True) -> TrainedHCLT:
    """Learn an HCLT on binary/categorical ids ``train`` ``[N, V]`` and pick its regularisation on ``valid`` ``[M, V]``.

    Every grid setting starts from the same structure and initial parameters.
    """
    train, valid = torch.as_tensor(train), torch.as_tensor(valid)
    if train.dim() != 2 or valid.dim() != 2 or train.shape[1] != valid.shape[1] or len(train) < 1 or len(valid) < 1:
        raise ValueError(f"train [N, V] and valid [M, V] must be non-empty id matrices over the same variables, "
                         f"got {tuple(train.shape)} and {tuple(valid.shape)}")
    num_categories = int(max(train.max(), valid.max())) + 1
    circuit = Circuit(hclt(train, recipe.num_latents, num_categories, num_trees=recipe.num_trees, seed=recipe.seed),
                      seed=recipe.seed, device=recipe.device)
    initial = _snapshot(circuit)
    marginals = empirical_marginals(train, num_categories)
    trials: list[Trial] = []
    best: tuple[Trial, dict] | None = None
    bar = tqdm(recipe.grid, desc="HCLT grid", unit="setting", disable=not progress)
    for setting in bar:
        circuit.set_parameters(initial)
        data = soften(train, setting.softening, num_categories, marginals=marginals) if setting.softening else train
        trial, parameters = _train_one(circuit, data, valid, setting, recipe)
        trials.append(trial)
        bar.set_postfix(valid=f"{trial.best_valid:.3f}", pseudocount=setting.pseudocount)
        if best is not None and trial.best_valid <= best[0].best_valid:
            break
        best = (trial, parameters)
    bar.close()
    circuit.set_parameters(best[1])
    return TrainedHCLT(circuit, best[0].setting, best[0].best_valid, best[0].best_epoch, trials)


def _snapshot(circuit: Circuit) -> dict[str, Tensor]:
    return {name: group.values.clone() for name, group in circuit.parameter_groups().items()}


def _train_one(circuit: Circuit, data: Tensor, valid: Tensor, setting: Regularization,
               recipe: HCLTRecipe) -> tuple[Trial, dict[str, Tensor]]:
    """Both EM phases with early stopping; returns the trial and its best-on-validation parameters."""
    trial = Trial(setting)
    best_parameters = _snapshot(circuit)
    # (name, model, schedule, patience: None runs every epoch, fit options)
    phases = [("mini-batch", circuit, em.LinearAnneal(recipe.step_start, recipe.step_end, recipe.minibatch_epochs),
               None, dict(batch_size=recipe.batch_size)),
              ("full-batch", _EntropyRegularized(circuit, setting.entropy_weight),
               em.Constant(1.0, recipe.fullbatch_epochs), recipe.patience,
               dict(batch_size=max(recipe.batch_size, 512), full_batch=True))]
    for phase, model, schedule, patience, options in phases:
        if schedule.num_epochs == 0:
            continue
        curve = trial.valid_curves[phase] = []
        since_best = [0]

        def on_epoch_end(epoch: int, history: em.History, phase=phase, curve=curve, since_best=since_best,
                         patience=patience) -> None:
            curve.append(history.valid_log_likelihood[-1])
            if curve[-1] > trial.best_valid:
                trial.best_valid, trial.best_epoch = curve[-1], f"{phase} {epoch + 1}"
                best_parameters.update(_snapshot(circuit))
                since_best[0] = 0
            else:
                since_best[0] += 1
                if patience is not None and since_best[0] >= patience:
                    raise _StopPhase

        try:
            em.fit(model, data, schedule, pseudocount=setting.pseudocount, valid=valid, seed=recipe.seed,
                   progress=False, on_epoch_end=on_epoch_end, **options)
        except _StopPhase:
            pass
        circuit.set_parameters(best_parameters)        # the next phase starts from the best so far
    return trial, best_parameters
