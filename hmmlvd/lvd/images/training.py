"""Training the MAE teacher: a masked fraction drawn from ``mask_ratio_range`` at every step, resumable atomic
checkpoints, and a disk cache of finished teachers keyed by (config, data hash).

Every random choice of step ``t`` (the masked fraction and which patches are masked) comes from a generator
seeded by ``(seed, t)``, and the order of epoch ``e`` from one seeded by ``(seed, e)``, so a resumed run repeats
the uninterrupted one exactly.

Under ``torch.distributed`` every rank draws the same batches and randomness, computes the loss of its rows of the
batch, and the gradients are summed across ranks with each rank's share of the rows as weight: every rank makes the
one-process update. Rank 0 alone writes; the others wait for it at a barrier.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...distributed import barrier, rank_and_world_size, sum_across_ranks
from ...io import atomic_write_json, cache_folder, load_tensors, save_tensors
from .teacher import MAETeacher, TeacherConfig, TeacherHistory

CHECKPOINT_FILE = "checkpoint.safetensors"
FINAL_FOLDER = "teacher"


def default_teacher_cache() -> Path:
    """``$HMMLVD_CACHE/teachers`` (default ``~/.cache/hmmlvd/teachers``)."""
    return cache_folder("teachers")


def images_hash(images: Tensor) -> str:
    """SHA-256 of a uint8 image tensor's shape and bytes."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def teacher_key(config: TeacherConfig, images: Tensor) -> str:
    """The cache key of the teacher trained with ``config`` on ``images``."""
    key = {"config": asdict(config), "data": images_hash(images), "format": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def train_teacher(images: Tensor, config: TeacherConfig | None = None, cache_dir: str | os.PathLike | None = None,
                  resume: bool = True, progress: bool = True, checkpoint_every: int = 100,
                  device: str | torch.device | None = None) -> MAETeacher:
    """Train (or fetch from the cache) an MAE teacher on ``images`` uint8 [N, C, H, W].

    The finished teacher lives in ``cache_dir/<key>/teacher`` (a ViT-MAE folder, see :meth:`MAETeacher.save_pretrained`)
    and a later call with the same config and images returns it without training. While training, a checkpoint
    (model, optimizer, step, history) is written atomically every ``checkpoint_every`` steps and after the last;
    ``resume=True`` continues from it. ``device`` defaults to the CPU.

    When ``torch.distributed`` is initialised, every rank calls this with the same arguments and images (and
    ``cache_dir`` on a file system they share): each step's batch is split across the ranks and their gradients
    summed, so the update is the one-process update. Rank 0 alone writes the checkpoints and the finished teacher;
    the other ranks wait for it and return the teacher it saved.
    """
    config = config or TeacherConfig()
    _check_training_images(images, config)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    rank = rank_and_world_size()[0]
    folder = Path(cache_dir or default_teacher_cache()) / teacher_key(config, images)
    finished = (folder / FINAL_FOLDER / "config.json").is_file()
    if not finished:
        teacher, optimizer, step = _start(config, images, folder / CHECKPOINT_FILE if resume else None, device)
    barrier()               # every rank has read the cache and the checkpoint before rank 0 changes them
    if finished:
        return MAETeacher.from_pretrained(folder / FINAL_FOLDER).to(device or "cpu")
    if rank == 0:
        atomic_write_json(folder / "key.json", {"config": asdict(config), "data": images_hash(images)})
    _train(teacher, optimizer, images, step, folder, progress and rank == 0, checkpoint_every)
    teacher.model.eval()
    if rank == 0:
        _publish(teacher, folder)
    barrier()               # rank 0 has published the finished teacher
    return teacher if rank == 0 else MAETeacher.from_pretrained(folder / FINAL_FOLDER).to(device or "cpu")


def _start(config: TeacherConfig, images: Tensor, checkpoint: Path | None,
           device: str | torch.device | None) -> tuple[MAETeacher, torch.optim.Optimizer, int]:
    """A new teacher on ``device`` (the CPU by default) and its AdamW optimizer, restored from ``checkpoint`` when
    that file exists; returns them and the number of steps already done."""
    teacher = _new_teacher(config, images)
    teacher.to(device or "cpu")
    optimizer = torch.optim.AdamW(teacher.model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    if checkpoint is not None and checkpoint.is_file():
        return teacher, optimizer, _load_checkpoint(checkpoint, teacher, optimizer)
    return teacher, optimizer, 0


def _train(teacher: MAETeacher, optimizer: torch.optim.Optimizer, images: Tensor, step: int, folder: Path,
           progress: bool, checkpoint_every: int) -> None:
    """Run the training steps from ``step`` to the end, recording the history and (rank 0) writing checkpoints."""
    config = teacher.config
    rank = rank_and_world_size()[0]
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    teacher.model.train()
    bar = tqdm(total=total_steps, initial=step, desc="MAE teacher", unit="step", disable=not progress)
    started = time.perf_counter() - teacher.history.seconds
    order, order_epoch = None, -1
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = torch.randperm(len(images), generator=_generator(config.seed, epoch)), epoch
        batch = images[order[position * config.batch_size:(position + 1) * config.batch_size]]
        loss, masked = _training_step(teacher, optimizer, batch, step, total_steps)
        teacher.history.step_losses.append(loss)
        teacher.history.mask_ratios.append(masked)
        step += 1
        if step % steps_per_epoch == 0:
            teacher.history.epoch_losses.append(sum(teacher.history.step_losses[-steps_per_epoch:]) / steps_per_epoch)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if rank == 0 and (step % checkpoint_every == 0 or step == total_steps):
            teacher.history.seconds = time.perf_counter() - started
            _save_checkpoint(folder / CHECKPOINT_FILE, teacher, optimizer, step)
    bar.close()


def _check_training_images(images: Tensor, config: TeacherConfig) -> None:
    expected = (config.num_channels, config.image_size, config.image_size)
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or tuple(images.shape[1:]) != expected or len(images) == 0:
        got = (images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"train_teacher needs a non-empty uint8 tensor [N, {expected[0]}, {expected[1]}, "
                         f"{expected[2]}] (set image_size and num_channels in TeacherConfig), got {got}")


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def _new_teacher(config: TeacherConfig, images: Tensor) -> MAETeacher:
    """A freshly initialised teacher with the per-channel pixel mean and std of ``images``."""
    scaled = images.transpose(0, 1).reshape(config.num_channels, -1).double() / 255.0
    mean, std = scaled.mean(1), scaled.std(1).clamp_min(1e-3)
    return MAETeacher.initialise(config, tuple(mean.tolist()), tuple(std.tolist()))


def _learning_rate(config: TeacherConfig, step: int, total_steps: int) -> float:
    warmup = int(config.warmup_fraction * total_steps)
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def _training_step(teacher: MAETeacher, optimizer: torch.optim.Optimizer, batch: Tensor, step: int,
                   total_steps: int) -> tuple[float, float]:
    """One AdamW step on the MAE loss of ``batch`` with a freshly drawn masked fraction; returns (loss, masked
    fraction).

    Every rank draws the same noise for the whole batch and runs the model on its rows ``rank::world_size``.
    Every image has exactly ``num_masked`` masked patches, so the batch's loss (a mean over all its masked patches)
    is the sum over ranks of each rank's mean weighted by its share of the rows, ``len(rows) / len(batch)``, and
    its gradient the sum of the ranks' weighted gradients (a mean of the ranks' means would be wrong whenever the
    shares differ). In one process the weight is 1.
    """
    config = teacher.config
    rank, world_size = rank_and_world_size()
    generator = _generator(config.seed, step)
    fewest, most = config.masked_counts
    num_masked = int(torch.randint(fewest, most + 1, (), generator=generator))
    noise = torch.rand(len(batch), teacher.num_patches, generator=generator)[rank::world_size].to(teacher.device)
    rows = batch[rank::world_size]
    for group in optimizer.param_groups:
        group["lr"] = _learning_rate(config, step, total_steps)
    optimizer.zero_grad(set_to_none=True)
    stats = torch.zeros(2, device=teacher.device)                 # (weighted loss, masked fraction on rank 0)
    if len(rows):                                                 # rank 0 always has rows
        with teacher.keeping(teacher.num_patches - num_masked):
            output = teacher.model(teacher.normalize(rows), noise=noise)
        weighted = output.loss * (len(rows) / len(batch))
        weighted.backward()
        stats[0] = weighted.detach()
        stats[1] = output.mask[0].mean() if rank == 0 else 0.0
    _sum_gradients([p for p in teacher.model.parameters() if p.requires_grad], stats)
    optimizer.step()
    return stats[0].item(), stats[1].item()


def _sum_gradients(parameters: list[Tensor], stats: Tensor) -> None:
    """Sum the gradients of ``parameters`` and ``stats`` across ranks in one all-reduce (a no-op in one process).

    A rank with no rows this step has no gradients: it adds zeros (the ViT-MAE gives every trainable parameter a
    gradient, so the ranks with rows, and a single process, update the same parameters).
    """
    if rank_and_world_size()[1] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([grad.reshape(-1) for grad in grads] + [stats])
    sum_across_ranks([flat])
    *summed_grads, summed_stats = flat.split([grad.numel() for grad in grads] + [len(stats)])
    for parameter, summed in zip(parameters, summed_grads):
        parameter.grad = summed.view_as(parameter)
    stats.copy_(summed_stats)


def _save_checkpoint(path: Path, teacher: MAETeacher, optimizer: torch.optim.Optimizer, step: int) -> None:
    tensors = {f"model.{name}": value for name, value in teacher.model.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        tensors.update({f"optimizer.{index}.{name}": value for name, value in values.items()})
    save_tensors(path, tensors, {"step": step, "param_groups": state["param_groups"],
                                 "history": asdict(teacher.history)})


def _load_checkpoint(path: Path, teacher: MAETeacher, optimizer: torch.optim.Optimizer) -> int:
    """Restore model, optimizer and history from ``path``; returns the number of steps already done."""
    tensors, meta = load_tensors(path, device=teacher.device)
    model_state = {name[len("model."):]: value for name, value in tensors.items() if name.startswith("model.")}
    teacher.model.load_state_dict(model_state)
    optimizer_state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["param_groups"]})
    teacher.history = TeacherHistory.from_dict(meta["history"])
    return int(meta["step"])


def _publish(teacher: MAETeacher, folder: Path) -> None:
    """Save the finished teacher as ``folder/teacher`` in one rename, then drop the checkpoint."""
    staging = Path(tempfile.mkdtemp(prefix=".teacher-", dir=folder))
    try:
        teacher.save_pretrained(staging)
        os.replace(staging, folder / FINAL_FOLDER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
