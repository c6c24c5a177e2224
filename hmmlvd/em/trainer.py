"""Mini-batch (and full-batch) EM with progress bars, validation and resumable checkpoints."""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..distributed import rank_and_world_size, sum_across_ranks
from .checkpoint import Checkpoint, History, LoopState
from .mstep import GaussianGroup, ParameterGroup, apply_m_step


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


def mean_log_likelihood(model: EMModel, data: Tensor, batch_size: int, device: torch.device) -> float:
    """Mean log-likelihood per example of ``data`` under ``model``, batched (and sharded across
    processes when ``torch.distributed`` is initialised)."""
    rank, world_size = rank_and_world_size()
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            shard = data[start:start + batch_size][rank::world_size]
            if len(shard):
                total += model.log_likelihood(shard.to(device)).double().sum()
    sum_across_ranks([total])
    return total.item() / max(len(data), 1)


def epoch_order(num_examples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled example order of one epoch: a pure function of (seed, epoch), so resumes replay it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def _check_fit_arguments(data: Tensor, batch_size: int, pseudocount: float, valid: Tensor | None,
                         patience: int | None, keep_best: bool) -> None:
    if not isinstance(data, Tensor) or data.dim() < 2 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor of examples [N, ...]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
    if (patience is not None or keep_best) and (not isinstance(valid, Tensor) or len(valid) == 0):
        raise ValueError("patience and keep_best need a non-empty validation split: pass valid=")


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
    patience: int | None = None,
    keep_best: bool = False,
) -> History:
    """Train ``model`` by EM on ``data`` for ``schedule.num_epochs`` epochs.

    Mini-batch mode (default) applies one M-step per shuffled batch with step size
    ``schedule(epoch, step, steps_per_epoch)``. ``full_batch=True`` accumulates the
    counts of the whole epoch (in chunks of ``batch_size``) and applies one M-step.
    With ``checkpoint_dir`` a checkpoint is written atomically after every epoch (and
    every ``checkpoint_every`` updates); ``resume=True`` continues from it and gives
    the same result as an uninterrupted run.

    With ``valid`` ``[M, ...]`` the mean validation log-likelihood is measured after every epoch and
    ``History.best_epoch`` records the best one. ``patience=p`` stops the run after ``p`` epochs in a row
    without a strictly better validation log-likelihood (``History.stopped_epoch``); ``keep_best=True``
    leaves the model with the parameters of the best validation epoch when the run ends. Both need
    ``valid``; the best parameters and the counters are checkpointed, so a resumed run stops at the same
    epoch and keeps the same parameters as an uninterrupted one.

    When ``torch.distributed`` is initialised, every process runs ``fit`` with the same
    arguments and data: each batch is split across processes, the counts are summed with
    ``all_reduce``, every process applies the same M-step, and rank 0 writes checkpoints.
    """
    _check_fit_arguments(data, batch_size, pseudocount, valid, patience, keep_best)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    device = torch.device(device) if device is not None else next(iter(model.parameter_groups().values())).values.device
    rank, _ = rank_and_world_size()
    steps_per_epoch = 1 if full_batch else math.ceil(len(data) / batch_size)
    checkpoint = None if checkpoint_dir is None else Checkpoint(checkpoint_dir, {
        "num_examples": len(data), "batch_size": batch_size, "seed": seed, "full_batch": full_batch,
        "pseudocount": pseudocount,
        **({"patience": patience} if patience is not None else {}), **({"keep_best": True} if keep_best else {})},
        rank)
    state = checkpoint.restore(model) if resume else LoopState()
    history, start_epoch, start_step = state.history, state.epoch, state.step

    bar = tqdm(total=schedule.num_epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch + start_step,
               desc="EM", unit="update", disable=not progress or rank != 0)
    for epoch in range(start_epoch, schedule.num_epochs):
        if history.stopped_epoch is not None:          # a resumed run that patience had already ended
            break
        clock = time.perf_counter()
        order = None if full_batch else epoch_order(len(data), seed, epoch)
        for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
            step_size = schedule(epoch, step, steps_per_epoch)
            chunks = _update_chunks(data, order, step, batch_size)
            log_likelihood, count = _em_update(model, chunks, step_size, pseudocount, device)
            state.running[0] += log_likelihood
            state.running[1] += count
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, ll=f"{state.running[0] / max(state.running[1], 1):.3f}",
                            eta=f"{step_size:.3g}")
            mid_epoch = step + 1 < steps_per_epoch and checkpoint_every and (step + 1) % checkpoint_every == 0
            if checkpoint is not None and mid_epoch:
                state.epoch, state.step = epoch, step + 1
                checkpoint.save(model, state)
        history.train_log_likelihood.append(state.running[0] / max(state.running[1], 1))
        history.step_sizes.append(schedule(epoch, steps_per_epoch - 1, steps_per_epoch))
        if valid is not None:
            history.valid_log_likelihood.append(mean_log_likelihood(model, valid, batch_size, device))
            if progress and rank == 0:
                bar.write(_epoch_line(epoch, schedule.num_epochs, history, time.perf_counter() - clock))
            _track_best(model, state, epoch, schedule.num_epochs, patience, keep_best)
        state.epoch, state.step, state.running = epoch + 1, 0, [0.0, 0]
        if checkpoint is not None:
            checkpoint.save(model, state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    bar.close()
    if keep_best and state.best_parameters is not None:
        model.set_parameters({name: values.clone() for name, values in state.best_parameters.items()})
    return history


def _track_best(model: EMModel, state: LoopState, epoch: int, num_epochs: int, patience: int | None,
                keep_best: bool) -> None:
    """After the validation of ``epoch``: record a new best epoch (and, with ``keep_best``, its parameters),
    and mark the run stopped when ``patience`` epochs have passed without one and epochs remain."""
    history, valid = state.history, state.history.valid_log_likelihood
    if history.best_epoch is None or valid[-1] > valid[history.best_epoch]:
        history.best_epoch = len(valid) - 1
        if keep_best:
            state.best_parameters = {name: group.values.clone() for name, group in model.parameter_groups().items()}
    if patience is not None and len(valid) - 1 - history.best_epoch >= patience and epoch + 1 < num_epochs:
        history.stopped_epoch = epoch


def _update_chunks(data: Tensor, order: Tensor | None, step: int, batch_size: int) -> list[Tensor]:
    """The examples of one update: batch ``step`` of the shuffled ``order``, or (full batch, ``order``
    None) all of ``data`` in chunks of ``batch_size``."""
    if order is None:
        return [data[i:i + batch_size] for i in range(0, len(data), batch_size)]
    return [data[order[step * batch_size:(step + 1) * batch_size]]]


def _em_update(model: EMModel, chunks: list[Tensor], step_size: float, pseudocount: float,
               device: torch.device) -> tuple[float, int]:
    """One M-step from the expected counts of ``chunks`` (each split across processes); returns the
    summed log-likelihood and the number of examples of the E-step."""
    rank, world_size = rank_and_world_size()
    counts = model.zero_counts()      # the last M-step consumed the previous buffers
    batch_stats = torch.zeros(2, dtype=torch.float64, device=device)
    for chunk in chunks:
        shard = chunk[rank::world_size]
        if len(shard):
            batch_stats[0] += model.accumulate_counts(shard.to(device), counts).double().sum()
            batch_stats[1] += len(shard)
    sum_across_ranks([*counts.values(), batch_stats])
    model.set_parameters(apply_m_step(model.parameter_groups(), counts, pseudocount=pseudocount,
                                      step_size=step_size, overwrite_counts=True))
    return batch_stats[0].item(), int(batch_stats[1].item())


def _epoch_line(epoch: int, num_epochs: int, history: History, seconds: float) -> str:
    return (f"epoch {epoch + 1}/{num_epochs}: train ll/example {history.train_log_likelihood[-1]:.4f}, "
            f"valid ll/example {history.valid_log_likelihood[-1]:.4f} ({seconds:.0f} s with validation)")
