"""HCLT training that chooses its hidden size and regularisation on the validation split, within a time budget.

A trial trains one HCLT of hidden size k with one :class:`Regularization` setting: mini-batch EM with a linearly
annealed step size (every epoch run), then full-batch EM with the entropy-regularised M-step and early stopping,
keeping the parameters of the best validation epoch (``em.fit(..., keep_best=True)``). Trials of the same k start
from the same initial parameters. :func:`search` chooses the trials, in two stages:

1. **Hidden size.** With the first (weakest) setting of the grid, try the sizes in increasing order and stop at
   the first one that is not better on valid than the best so far.
2. **Regularisation.** At the chosen size, try the other settings from weak to strong and stop at the first one
   that is not better on valid than the best so far.

A trial whose predicted cost would overrun ``time_budget`` seconds is skipped (the first trial always runs).
``train_hclt`` returns the best trial's circuit with its best-on-valid parameters, every trial with its valid score
and seconds, and the skipped ones.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

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

    ``hidden_sizes`` (increasing) and ``grid`` are searched as the module docstring says; one size and one setting
    train a single HCLT with no search. ``time_budget`` (seconds, None for no limit) caps the search.
    ``patience``: the full-batch phase stops after this many epochs without a better validation log-likelihood.
    The mini-batch phase always runs its whole annealed schedule: while the step size is large its validation
    log-likelihood is noisy (on plants it stalled for 10 epochs at η ≈ 0.4 and stopping there cost 0.66 nats),
    so only its best epoch is kept. ``mi_bins`` merges category values into that many bins for the mutual
    information of the Chow–Liu tree only (e.g. 8 for 256-level pixels; None: no merging).
    """

    hidden_sizes: tuple[int, ...] = (8, 16, 32, 64)
    grid: tuple[Regularization, ...] = DEFAULT_GRID
    time_budget: float | None = 3600.0
    num_trees: int = 1
    minibatch_epochs: int = 60
    fullbatch_epochs: int = 5
    batch_size: int = 256
    step_start: float = 0.5
    step_end: float = 0.02
    patience: int = 10
    mi_bins: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                        for k in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty tuple of positive integers, got {self.hidden_sizes!r}")
        if list(self.hidden_sizes) != sorted(set(self.hidden_sizes)):
            raise ValueError(f"hidden_sizes must be strictly increasing, got {self.hidden_sizes!r}")
        for name in ("num_trees", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_epochs < 0 or self.fullbatch_epochs < 0 or self.minibatch_epochs + self.fullbatch_epochs < 1:
            raise ValueError("minibatch_epochs and fullbatch_epochs must be >= 0 with at least one epoch in all")
        if not 0 < self.step_end <= 1 or not 0 < self.step_start <= 1:
            raise ValueError(f"step sizes must be in (0, 1], got {self.step_start} -> {self.step_end}")
        if not self.grid or not all(isinstance(point, Regularization) for point in self.grid):
            raise ValueError("grid must be a non-empty tuple of Regularization settings")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds or None, got {self.time_budget!r}")
        if self.mi_bins is not None and self.mi_bins < 2:
            raise ValueError(f"mi_bins must be >= 2 or None, got {self.mi_bins!r}")


#: Named recipes. ``search``: the default search. ``fixed``: the recipe tuned on the five DEBD datasets
#: (bench/RESULTS.md), k = 32 and pseudocount 0.01, one trial.
PRESETS = {"search": HCLTRecipe(), "fixed": HCLTRecipe(hidden_sizes=(32,), grid=(Regularization(0.01),))}


@dataclass
class Trial:
    """What one (hidden size, setting) did: per-epoch validation LL of each phase, its best epoch and seconds."""

    num_latents: int
    setting: Regularization
    num_parameters: int
    valid_curves: dict[str, list[float]] = field(default_factory=dict)
    best_valid: float = -float("inf")
    best_epoch: str = ""
    seconds: float = 0.0


@dataclass
class TrainedHCLT:
    """The trained ``circuit`` (best-on-validation parameters of the best trial), its hidden size
    ``num_latents``, the ``chosen`` setting, every ``trials`` in the order run, the (hidden size, setting) pairs
    ``skipped`` for the time budget, and the ``seconds`` of the whole search against ``time_budget``."""

    circuit: Circuit
    num_latents: int
    chosen: Regularization
    best_valid: float
    best_epoch: str
    trials: list[Trial]
    skipped: list[tuple[int, Regularization]]
    seconds: float
    time_budget: float | None


def search(recipe: HCLTRecipe, run_trial: Callable[[int, Regularization], Trial],
           num_parameters: Callable[[int], int], clock: Callable[[], float] = time.perf_counter
           ) -> tuple[list[Trial], list[tuple[int, Regularization]]]:
    """Run the two-stage search of the module docstring; returns (trials in order, skipped (k, setting) pairs).

    ``run_trial(k, setting)`` trains and scores one trial; ``num_parameters(k)`` is the circuit size of hidden
    size k. A trial is skipped when the time spent so far plus its predicted seconds exceed
    ``recipe.time_budget``; the prediction scales the seconds of the tried trial nearest in size by the ratio
    of parameter counts.
    """
    start, trials, skipped = clock(), [], []

    def attempt(num_latents: int, setting: Regularization) -> Trial | None:
        if trials and recipe.time_budget is not None:
            size = num_parameters(num_latents)
            nearest = min(trials, key=lambda trial: abs(math.log(trial.num_parameters / size)))
            if clock() - start + nearest.seconds * size / nearest.num_parameters > recipe.time_budget:
                skipped.append((num_latents, setting))
                return None
        trials.append(run_trial(num_latents, setting))
        return trials[-1]

    best = None
    for num_latents in recipe.hidden_sizes:
        trial = attempt(num_latents, recipe.grid[0])
        if trial is None or (best is not None and trial.best_valid <= best.best_valid):
            break
        best = trial
    for setting in recipe.grid[1:]:
        trial = attempt(best.num_latents, setting)
        if trial is None or trial.best_valid <= best.best_valid:
            break
        best = trial
    return trials, skipped


class _EntropyRegularized:
    """An EM model that forwards to ``circuit`` but asks for entropy-regularised categorical M-steps."""

    def __init__(self, circuit: Circuit, entropy_weight: float):
        self.circuit, self.entropy_weight = circuit, entropy_weight

    def parameter_groups(self) -> dict:
        return {name: replace(group, entropy_weight=self.entropy_weight) if isinstance(group, em.ParameterGroup)
                else group for name, group in self.circuit.parameter_groups().items()}

    def __getattr__(self, name: str):
        return getattr(self.circuit, name)


def train_hclt(train: Tensor, valid: Tensor, recipe: HCLTRecipe = HCLTRecipe(), *, num_categories: int | None = None,
               directory: str | os.PathLike | None = None, resume: bool = False,
               progress: bool = True) -> TrainedHCLT:
    """Learn an HCLT on category ids ``train`` ``[N, V]`` and choose its hidden size and regularisation on
    ``valid`` ``[M, V]`` (any integer dtype, e.g. uint8 pixels; ``num_categories`` defaults to the largest id + 1).

    With ``directory``, every EM phase of every trial is checkpointed under ``directory/k<k>-<setting index>/``
    and ``resume=True`` continues an interrupted search: finished trials are read back, not retrained (their
    ``seconds`` then count the reading only, so a binding ``time_budget`` may try more settings on resume).
    """
    train, valid = torch.as_tensor(train), torch.as_tensor(valid)
    if (train.dim() != 2 or valid.dim() != 2 or train.shape[1] != valid.shape[1] or len(train) < 1 or len(valid) < 1
            or train.is_floating_point() or valid.is_floating_point()):
        raise ValueError(f"train [N, V] and valid [M, V] must be non-empty integer id matrices over the same "
                         f"variables, got {tuple(train.shape)} {train.dtype} and {tuple(valid.shape)} {valid.dtype}")
    train, valid = train.long(), valid.long()
    smallest, largest = int(min(train.min(), valid.min())), int(max(train.max(), valid.max()))
    num_categories = largest + 1 if num_categories is None else num_categories
    if smallest < 0 or largest >= num_categories:
        raise ValueError(f"ids must lie in [0, {num_categories}) (num_categories), found [{smallest}, {largest}]")
    if resume and directory is None:
        raise ValueError("resume=True needs directory")
    start = time.perf_counter()
    circuits: dict[int, tuple[Circuit, dict[str, Tensor]]] = {}
    marginals = empirical_marginals(train, num_categories)
    kept: dict[str, object] = {}
    bar = tqdm(total=len(recipe.hidden_sizes) + len(recipe.grid) - 1, desc="HCLT search", unit="trial",
               disable=not progress)

    def circuit_for(num_latents: int) -> tuple[Circuit, dict[str, Tensor]]:
        if num_latents not in circuits:
            structure = hclt(train, num_latents, num_categories, num_bins=recipe.mi_bins, num_trees=recipe.num_trees,
                             seed=recipe.seed)
            circuit = Circuit(structure, seed=recipe.seed, device=recipe.device)
            circuits[num_latents] = circuit, _snapshot(circuit)
        return circuits[num_latents]

    def run_trial(num_latents: int, setting: Regularization) -> Trial:
        circuit, initial = circuit_for(num_latents)
        circuit.set_parameters(initial)
        data = soften(train, setting.softening, num_categories, marginals=marginals) if setting.softening else train
        folder = None if directory is None else Path(directory) / f"k{num_latents}-{recipe.grid.index(setting)}"
        trial = _train_one(circuit, data, valid, Trial(num_latents, setting, circuit.num_parameters), recipe,
                           folder, resume)
        if "trial" not in kept or trial.best_valid > kept["trial"].best_valid:
            kept.update(trial=trial, parameters=_snapshot(circuit))
        bar.update(1)
        bar.set_postfix(k=num_latents, pseudocount=setting.pseudocount, valid=f"{trial.best_valid:.3f}")
        return trial

    trials, skipped = search(recipe, run_trial, lambda k: circuit_for(k)[0].num_parameters)
    bar.close()
    best = kept["trial"]
    circuit = circuit_for(best.num_latents)[0]
    circuit.set_parameters(kept["parameters"])
    return TrainedHCLT(circuit, best.num_latents, best.setting, best.best_valid, best.best_epoch, trials, skipped,
                       time.perf_counter() - start, recipe.time_budget)


def _snapshot(circuit: Circuit) -> dict[str, Tensor]:
    return {name: group.values.clone() for name, group in circuit.parameter_groups().items()}


def _train_one(circuit: Circuit, data: Tensor, valid: Tensor, trial: Trial, recipe: HCLTRecipe,
               folder: Path | None, resume: bool) -> Trial:
    """Both EM phases of one trial on ``circuit``, which ends with the trial's best-on-validation parameters."""
    start, setting = time.perf_counter(), trial.setting
    phases = [("mini-batch", circuit, em.LinearAnneal(recipe.step_start, recipe.step_end, recipe.minibatch_epochs),
               dict(batch_size=recipe.batch_size)),
              ("full-batch", _EntropyRegularized(circuit, setting.entropy_weight),
               em.Constant(1.0, recipe.fullbatch_epochs),
               dict(batch_size=max(recipe.batch_size, 512), full_batch=True, patience=recipe.patience))]
    for phase, model, schedule, options in phases:
        if schedule.num_epochs == 0:
            continue
        before = _snapshot(circuit)
        history = em.fit(model, data, schedule, pseudocount=setting.pseudocount, valid=valid, seed=recipe.seed,
                         progress=False, keep_best=True, resume=resume,
                         checkpoint_dir=None if folder is None else folder / phase, **options)
        trial.valid_curves[phase] = list(history.valid_log_likelihood)
        phase_best = history.valid_log_likelihood[history.best_epoch]
        if phase_best > trial.best_valid:
            trial.best_valid, trial.best_epoch = phase_best, f"{phase} {history.best_epoch + 1}"
        else:
            circuit.set_parameters(before)          # the earlier phase's best stays the trial's best
    trial.seconds = time.perf_counter() - start
    return trial
