"""The MAE teacher trained by two gloo processes (torch.multiprocessing, CPU) is the one-process teacher: each rank
takes its rows of every batch and the gradients are summed with the right weights; rank 0 alone writes the
checkpoints and the cache, an interrupted two-process run resumes from rank 0's checkpoint, and a finished teacher
is a cache hit on every rank."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from hmmlvd.lvd.images import train_teacher
from hmmlvd.lvd.images import training

from .conftest import random_images, tiny_config

# 11 images in batches of 5 over 2 epochs: 6 steps whose batches split 3 + 2 rows (unequal shares, so a mean of
# the ranks' mean losses would be wrong) and 1 + 0 (rank 1 has no rows). 8×8 images of 4×4 patches: 1 to 3 of 4
# masked. The interrupted run stops at the start of step 5, after rank 0's checkpoint of step 4.
CONFIG = tiny_config(patch_size=4, epochs=2, batch_size=5)
IMAGES = random_images(11)
TOTAL_STEPS, INTERRUPT_AT, CHECKPOINT_EVERY = 6, 4, 2


class Interrupted(Exception):
    pass


def _state(teacher) -> dict[str, torch.Tensor]:
    history = teacher.history
    return {**{f"model.{name}": value.contiguous() for name, value in teacher.model.state_dict().items()},
            "step_losses": torch.tensor(history.step_losses, dtype=torch.float64),
            "mask_ratios": torch.tensor(history.mask_ratios, dtype=torch.float64)}


def _train(cache_dir):
    return train_teacher(IMAGES, CONFIG, cache_dir=cache_dir, progress=False, checkpoint_every=CHECKPOINT_EVERY)


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    written, real_replace = [], os.replace          # every file the package writes ends in an os.replace
    os.replace = lambda source, target: written.append(str(target)) or real_replace(source, target)
    real_step, steps, interrupt = training._training_step, [], [True]

    def counted_step(*args):
        steps.append(args[3])
        if interrupt[0] and args[3] == INTERRUPT_AT:     # both ranks stop before this step's all-reduce
            raise Interrupted
        return real_step(*args)

    training._training_step = counted_step
    with pytest.raises(Interrupted):
        _train(out_dir / "cache")
    dist.barrier()                                       # as after a restart: rank 0's checkpoint is on disk
    steps.clear()
    interrupt[0] = False
    resumed = _train(out_dir / "cache")
    assert steps == list(range(INTERRUPT_AT, TOTAL_STEPS))    # only the steps after the checkpoint
    steps.clear()
    again = _train(out_dir / "cache")
    assert steps == [] and _state(again).keys() == _state(resumed).keys()
    assert all(torch.equal(_state(again)[k], v) for k, v in _state(resumed).items())    # a cache hit on every rank
    os.replace = real_replace
    save_file(_state(resumed), str(out_dir / f"rank{rank}.safetensors"))
    (out_dir / f"written{rank}.txt").write_text("\n".join(written))
    dist.destroy_process_group()


def test_two_processes_train_the_one_process_teacher_and_resume(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    alone = _state(_train(tmp_path / "alone"))
    assert len(alone["step_losses"]) == TOTAL_STEPS
    ranks = [load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in (0, 1)]
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in alone)       # identical on both ranks
    assert ranks[0].keys() == alone.keys() and torch.equal(ranks[0]["mask_ratios"], alone["mask_ratios"])
    for key, value in alone.items():
        # The same float32 sums in another order (each rank's rows, then the all-reduce) give the one-process
        # weights to rounding: at most 1e-7 after 6 AdamW steps (measured). The key biases get an exactly zero
        # gradient (softmax ignores a shift shared by a row's logits), so AdamW moves them by rounding noise
        # divided by its eps: up to 5e-7 apart. A mean of the ranks' means, or no all-reduce, is 1e-2 off.
        tolerance = 1e-5 if key.endswith("k_proj.bias") else 1e-6
        torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=tolerance, msg=key)
    written = (tmp_path / "written0.txt").read_text().split("\n")
    assert (tmp_path / "written1.txt").read_text() == ""                        # rank 1 wrote nothing
    folder = str(tmp_path / "cache" / training.teacher_key(CONFIG, IMAGES))
    assert all(path.startswith(folder) for path in written)          # the staged teacher.json, then these:
    assert {os.path.basename(path) for path in written if os.path.dirname(path) == folder} == {
        "key.json", training.CHECKPOINT_FILE, training.FINAL_FOLDER}
