"""Resumable EM checkpoints: the parameters, the loop position and the run signature, in one atomic file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ..io import load_tensors, save_tensors

CHECKPOINT_FILE = "checkpoint.safetensors"
BEST_PREFIX = "best/"       # the tensors of the best-on-valid parameters kept by ``fit(keep_best=True)``


@dataclass
class History:
    """Per-epoch mean log-likelihood per example (train is the running mini-batch estimate).

    With a validation split, ``best_epoch`` is the (0-based) epoch of this run with the highest validation
    log-likelihood (the first one on ties); ``stopped_epoch`` is the epoch after which ``patience`` ended the
    run, or None when the schedule ran to its end.
    """

    train_log_likelihood: list[float] = field(default_factory=list)
    valid_log_likelihood: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_epoch: int | None = None

    def as_dict(self) -> dict:
        return {"train_log_likelihood": self.train_log_likelihood,
                "valid_log_likelihood": self.valid_log_likelihood,
                "step_sizes": self.step_sizes, "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch}


@dataclass
class LoopState:
    """Where an EM run stands: the next (epoch, step), the running log-likelihood sum and count of the
    current epoch, the history of the finished epochs and, with ``keep_best``, the parameters of the
    best validation epoch so far (None before the first validation)."""

    epoch: int = 0
    step: int = 0
    running: list = field(default_factory=lambda: [0.0, 0])
    history: History = field(default_factory=History)
    best_parameters: dict[str, Tensor] | None = None


class Checkpoint:
    """``checkpoint.safetensors`` in ``directory``, written atomically by rank 0 only.

    ``run_signature`` (a JSON-able dict) identifies the run; :meth:`restore` refuses a checkpoint
    written by a run with another signature or another model shape.
    """

    def __init__(self, directory: str | os.PathLike, run_signature: dict, rank: int = 0):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.run_signature = run_signature
        self.rank = rank

    def save(self, model, state: LoopState) -> None:
        """Write the model's parameter groups and ``state`` (a no-op on ranks other than 0)."""
        if self.rank != 0:
            return
        tensors = {name: group.values for name, group in model.parameter_groups().items()}
        tensors.update({BEST_PREFIX + name: values for name, values in (state.best_parameters or {}).items()})
        meta = {"epoch": state.epoch, "step": state.step, "running": state.running,
                "history": state.history.as_dict(), "run": self.run_signature}
        save_tensors(self.path, tensors, meta)

    def restore(self, model) -> LoopState:
        """Load the parameters into ``model`` and return the saved loop state (a fresh one without a file)."""
        if not self.path.exists():
            return LoopState()
        tensors, meta = load_tensors(self.path)
        if meta.get("run") != self.run_signature:
            raise ValueError(
                f"checkpoint {self.path} was written by a different run ({meta.get('run')}); "
                f"this run is {self.run_signature}. Use the same data, batch size, seed and pseudocount, "
                "or a fresh checkpoint_dir")
        groups = model.parameter_groups()
        best = {name[len(BEST_PREFIX):]: tensors.pop(name) for name in list(tensors) if name.startswith(BEST_PREFIX)}
        if any(set(found) != set(groups) or any(found[n].shape != groups[n].values.shape for n in groups)
               for found in ([tensors, best] if best else [tensors])):
            raise ValueError(f"checkpoint {self.path} holds parameters of another model shape; "
                             "build the model with the same configuration or use a fresh checkpoint_dir")

        def on_model(found: dict[str, Tensor]) -> dict[str, Tensor]:
            return {n: found[n].to(groups[n].values.device, groups[n].values.dtype) for n in groups}

        model.set_parameters(on_model(tensors))
        return LoopState(int(meta["epoch"]), int(meta["step"]), list(meta["running"]), History(**meta["history"]),
                         on_model(best) if best else None)
