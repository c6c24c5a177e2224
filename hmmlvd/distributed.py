"""torch.distributed plumbing shared by every stage: the process group from torchrun's environment,
the backend (NCCL on GPUs, gloo on CPUs), contiguous shards per rank and summing across ranks.

A base module like :mod:`hmmlvd.io`: it imports nothing else of hmmlvd. With no process group every
helper behaves as a single process (rank 0 of 1), so library code calls them unconditionally.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, or ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_backend() -> str:
    """``"nccl"`` when CUDA and NCCL are available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def collective_device() -> torch.device:
    """Where tensors must live for the current backend's collectives (NCCL: this rank's GPU)."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextmanager
def process_group_from_env() -> Iterator[tuple[int, int]]:
    """Initialise the process group from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) for the duration of the block and yield ``(rank, world_size)``.

    Without ``WORLD_SIZE`` (a plain ``python`` run), or when a group already exists, nothing is
    initialised. On NCCL each process takes the GPU ``LOCAL_RANK``.
    """
    if "WORLD_SIZE" not in os.environ or (dist.is_available() and dist.is_initialized()):
        yield rank_and_world_size()
        return
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE is set but {name} is not: start the command with torchrun "
                             f"(torchrun --nproc-per-node N -m hmmlvd ...), or unset WORLD_SIZE")
    backend = default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        yield rank_and_world_size()
    finally:
        dist.destroy_process_group()


def shard_bounds(num_items: int, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous part of ``num_items``; the parts differ by at most one
    item, cover everything in rank order, and do not overlap."""
    if rank is None or world_size is None:
        rank, world_size = rank_and_world_size()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    base, extra = divmod(num_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard(items: Tensor, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """This rank's contiguous part of ``items`` along dim 0 (all of it in a single process)."""
    start, stop = shard_bounds(len(items), rank, world_size)
    return items[start:stop]


def sum_across_ranks(tensors: Sequence[Tensor]) -> None:
    """All-reduce (sum) each tensor in place; a no-op in a single process. Tensors on another device
    than the backend needs travel there and back."""
    if rank_and_world_size()[1] == 1:
        return
    device = collective_device()
    for tensor in tensors:
        if tensor.device == device:
            dist.all_reduce(tensor)
        else:
            moved = tensor.to(device)
            dist.all_reduce(moved)
            tensor.copy_(moved)


def broadcast_from(tensor: Tensor, source: int) -> None:
    """Overwrite ``tensor`` on every rank with rank ``source``'s copy; a no-op in a single process."""
    if rank_and_world_size()[1] == 1:
        return
    device = collective_device()
    moved = tensor if tensor.device == device else tensor.to(device)
    dist.broadcast(moved, source)
    if moved is not tensor:
        tensor.copy_(moved)


def gather_sizes(size: float) -> list[float]:
    """Every rank's ``size`` (a float64 scalar each), in rank order; ``[size]`` in a single process."""
    rank, world_size = rank_and_world_size()
    values = torch.zeros(world_size, dtype=torch.float64, device=collective_device())
    values[rank] = size
    sum_across_ranks([values])
    return values.tolist()


def concat_shards(local: Tensor, num_items: int) -> Tensor:
    """Every rank's :func:`shard` of ``num_items`` items put back together, in order, on every rank: the inverse
    of :func:`shard` (``local`` itself in a single process). ``local`` is [stop - start, ...]."""
    if rank_and_world_size()[1] == 1:
        return local
    start, stop = shard_bounds(num_items)
    if len(local) != stop - start:
        raise ValueError(f"this rank holds {len(local)} items but its shard of {num_items} is {stop - start}")
    whole = torch.zeros((num_items, *local.shape[1:]), dtype=local.dtype, device=local.device)
    whole[start:stop] = local
    sum_across_ranks([whole])
    return whole
