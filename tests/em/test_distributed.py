"""EM across two processes (torch.distributed, gloo on CPU) equals EM in one process."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd import HMM, HMMConfig
from hmmlvd.em import LinearAnneal, fit

CONFIG = HMMConfig(num_states=4, vocab_size=6, seq_len=8)


def _data():
    return HMM.random(HMMConfig(3, 6, 8), seed=9).sample(150, generator=torch.Generator().manual_seed(0))


def _train(model, checkpoint_dir=None):
    return fit(model, _data(), LinearAnneal(0.6, 0.2, epochs=2), batch_size=32, seed=3, valid=_data()[:40],
               checkpoint_dir=checkpoint_dir, progress=False)


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = HMM.random(CONFIG, seed=1, dtype=torch.float64)
    history = _train(model, checkpoint_dir=out_dir)
    if rank == 1:
        model.save_pretrained(out_dir / "rank1")
        (out_dir / "valid.json").write_text(json.dumps(history.valid_log_likelihood))
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    reference = HMM.random(CONFIG, seed=1, dtype=torch.float64)
    history = _train(reference)
    trained = HMM.from_pretrained(tmp_path / "rank1", dtype=torch.float64)
    for name, group in reference.parameter_groups().items():
        torch.testing.assert_close(trained.parameter_groups()[name].values, group.values, rtol=1e-10, atol=1e-12)
    distributed_valid = json.loads((tmp_path / "valid.json").read_text())
    assert distributed_valid == pytest.approx(history.valid_log_likelihood, rel=1e-12)
    assert (tmp_path / "checkpoint.safetensors").exists()
