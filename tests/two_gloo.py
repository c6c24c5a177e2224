"""Run a function in two gloo processes (one machine, CPU) and collect what each rank returns."""
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd.distributed import rank_and_world_size
from hmmlvd.io import load_tensors, save_tensors


def _worker(rank: int, init_file: str, out_dir: Path, function) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    assert rank_and_world_size() == (rank, 2)
    save_tensors(out_dir / f"rank{rank}.safetensors", function())
    dist.destroy_process_group()


def run_on_two_ranks(function, out_dir: Path) -> list[dict[str, torch.Tensor]]:
    """``function()`` (a module-level function returning named tensors) on ranks 0 and 1 of a 2-process gloo group;
    the tensors each rank returned, in rank order."""
    mp.spawn(_worker, args=(str(out_dir / "init"), out_dir, function), nprocs=2, join=True)
    return [load_tensors(out_dir / f"rank{rank}.safetensors")[0] for rank in range(2)]
