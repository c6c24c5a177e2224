"""Mini-batch (and full-batch) EM with progress bars, validation and resumable checkpoints."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from ..io import load_tensors, save_tensors
from .mstep import GaussianGroup, ParameterGroup, apply_m_step

CHECKPOINT_FILE = "checkpoint.safetensors"


class EMModel(Protocol):
    """What :func:`fit` needs from a model: its parameter groups and expected counts."""

    def parameter_groups(self) -> dict[str, ParameterGroup | GaussianGroup]: ...

    def set_parameters(self, values: dict[str, Tensor]) -> None: ...

    def zero_counts(self) -> dict[str, Tensor]: ...

    def accumulate_counts(self, batch: Tensor, counts: dict[str, Tensor]) -> Tensor:
        """Add the expected counts of ``batch`` into ``counts``; return per-example log-likelihoods."""
        ...

    def log_likelihood(self, batch: Tensor) -> Tensor: ...


class Schedule(Protocol):
    num_epochs: int

    def __call__(self, epoch: int, step: int, steps_per_epoch: int) -> float: ...


@dataclass
class History:
    """Per-epoch mean log-likelihood per example (train is the running mini-batch estimate)."""

    train_log_likelihood: list[float] = field(default_factory=list)
    valid_log_likelihood: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"train_log_likelihood": self.train_log_likelihood,
                "valid_log_likelihood": self.valid_log_likelihood,
                "step_sizes": self.step_sizes}


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum_across_processes(tensors: list[Tensor]) -> None:
    if process_group()[1] > 1:
        for tensor in tensors:
            dist.all_reduce(tensor)


def mean_log_likelihood(model: EMModel, data: Tensor, batch_size: int, device: torch.device) -> float:
    """Mean log-likelihood per example of ``data`` under ``model``, batched (and sharded across
    processes when ``torch.distributed`` is initialised)."""
    rank, world_size = process_group()
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            shard = data[start:start + batch_size][rank::world_size]
            if len(shard):
                total += model.log_likelihood(shard.to(device)).double().sum()
    _sum_across_processes([total])
    return total.item() / max(len(data), 1)


def epoch_order(num_examples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled example order of one epoch: a pure function of (seed, epoch), so resumes replay it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def _check_fit_arguments(data: Tensor, batch_size: int, pseudocount: float) -> None:
    if not isinstance(data, Tensor) or data.dim() < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor of examples [N, ...]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")


def fit(
    model: EMModel,
    data: Tensor,
    schedule: Schedule,
    *,
    batch_size: int = 1024,
    pseudocount: float = 0.1,
    full_batch: bool = False,
    valid: Tensor | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` by EM on ``data`` for ``schedule.num_epochs`` epochs.

    Mini-batch mode (default) applies one M-step per shuffled batch with step size
    ``schedule(epoch, step, steps_per_epoch)``. ``full_batch=True`` accumulates the
    counts of the whole epoch (in chunks of ``batch_size``) and applies one M-step.
    With ``checkpoint_dir`` a checkpoint is written atomically after every epoch (and
    every ``checkpoint_every`` updates); ``resume=True`` continues from it and gives
    the same result as an uninterrupted run.

    When ``torch.distributed`` is initialised, every process runs ``fit`` with the same
    arguments and data: each batch is split across processes, the counts are summed with
    ``all_reduce``, every process applies the same M-step, and rank 0 writes checkpoints.
    """
    _check_fit_arguments(data, batch_size, pseudocount)
    device = torch.device(device) if device is not None else next(iter(model.parameter_groups().values())).values.device
    steps_per_epoch = 1 if full_batch else math.ceil(len(data) / batch_size)
    run_signature = {"num_examples": len(data), "batch_size": batch_size, "seed": seed,
                     "full_batch": full_batch, "pseudocount": pseudocount}
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None

    history, start_epoch, start_step, running = History(), 0, 0, [0.0, 0]
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs checkpoint_dir")
        if checkpoint.exists():
            history, start_epoch, start_step, running = _restore(model, checkpoint, run_signature)

    rank, world_size = process_group()

    def save(epoch: int, step: int) -> None:
        if checkpoint is None or rank != 0:
            return
        tensors = {name: group.values for name, group in model.parameter_groups().items()}
        meta = {"epoch": epoch, "step": step, "running": running, "history": history.as_dict(),
                "run": run_signature}
        save_tensors(checkpoint, tensors, meta)

    total_updates = schedule.num_epochs * steps_per_epoch
    bar = tqdm(total=total_updates, initial=start_epoch * steps_per_epoch + start_step,
               desc="EM", unit="update", disable=not progress or rank != 0)
    for epoch in range(start_epoch, schedule.num_epochs):
        order = None if full_batch else epoch_order(len(data), seed, epoch)
        for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
            counts = model.zero_counts()      # the last M-step consumed the previous buffers
            if full_batch:
                chunks = [data[i:i + batch_size] for i in range(0, len(data), batch_size)]
            else:
                chunks = [data[order[step * batch_size:(step + 1) * batch_size]]]
            batch_stats = torch.zeros(2, dtype=torch.float64, device=device)
            for chunk in chunks:
                shard = chunk[rank::world_size]
                if len(shard):
                    batch_stats[0] += model.accumulate_counts(shard.to(device), counts).double().sum()
                    batch_stats[1] += len(shard)
            _sum_across_processes([*counts.values(), batch_stats])
            running[0] += batch_stats[0].item()
            running[1] += int(batch_stats[1].item())
            step_size = schedule(epoch, step, steps_per_epoch)
            model.set_parameters(apply_m_step(model.parameter_groups(), counts, pseudocount=pseudocount,
                                              step_size=step_size, overwrite_counts=True))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, ll=f"{running[0] / max(running[1], 1):.3f}", eta=f"{step_size:.3g}")
            if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps_per_epoch:
                save(epoch, step + 1)
        history.train_log_likelihood.append(running[0] / max(running[1], 1))
        history.step_sizes.append(schedule(epoch, steps_per_epoch - 1, steps_per_epoch))
        if valid is not None:
            history.valid_log_likelihood.append(mean_log_likelihood(model, valid, batch_size, device))
            if progress and rank == 0:
                bar.write(f"epoch {epoch + 1}: train ll/example {history.train_log_likelihood[-1]:.4f}, "
                          f"valid ll/example {history.valid_log_likelihood[-1]:.4f}")
        running = [0.0, 0]
        save(epoch + 1, 0)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    bar.close()
    return history


def _restore(model: EMModel, checkpoint: Path, run_signature: dict) -> tuple[History, int, int, list]:
    tensors, meta = load_tensors(checkpoint)
    if meta.get("run") != run_signature:
        raise ValueError(
            f"checkpoint {checkpoint} was written by a different run ({meta.get('run')}); "
            f"this run is {run_signature}. Use the same data, batch size, seed and pseudocount, "
            "or a fresh checkpoint_dir")
    groups = model.parameter_groups()
    if set(tensors) != set(groups) or any(tensors[n].shape != groups[n].values.shape for n in groups):
        raise ValueError(f"checkpoint {checkpoint} holds parameters of another model shape; "
                         "build the model with the same configuration or use a fresh checkpoint_dir")
    model.set_parameters({n: tensors[n].to(groups[n].values.device, groups[n].values.dtype) for n in groups})
    history = History(**meta["history"])
    return history, int(meta["epoch"]), int(meta["step"]), list(meta["running"])
