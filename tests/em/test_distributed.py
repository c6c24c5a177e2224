"""EM across two processes (torch.distributed, gloo on CPU) equals EM in one process."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd import HMM, HMMConfig
from hmmlvd.em import Constant, LinearAnneal, fit

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


# Full-batch EM with uneven shards (151 examples over 2 processes, chunks of 40) and an interruption
# after the second epoch, resumed from the checkpoint: for an HMM and for a circuit (HCLT).
NUM_EXAMPLES, CHUNK, EPOCHS, INTERRUPT_AFTER = 151, 40, 4, 2


class Interrupted(Exception):
    pass


def _full_batch_models(seed=1):
    """Both models, initialised from ``seed`` (a resumed run starts from another seed: the
    checkpoint, not the init, must decide the result)."""
    from hmmlvd import pc
    from hmmlvd.pc.structures import hclt

    circuit_data = _circuit_data()
    circuit = pc.Circuit(hclt(circuit_data, num_latents=3), seed=seed, dtype=torch.float64)
    return {"hmm": (HMM.random(CONFIG, seed=seed, dtype=torch.float64), _data()[:NUM_EXAMPLES]),
            "circuit": (circuit, circuit_data)}


def _circuit_data():
    generator = torch.Generator().manual_seed(4)
    first = (torch.rand(NUM_EXAMPLES, generator=generator) < 0.4).long()
    flips = (torch.rand(NUM_EXAMPLES, 4, generator=generator) < 0.2).long()
    return torch.cat([first[:, None], first[:, None] ^ flips], dim=1)


def _full_batch_fit(model, data, checkpoint_dir=None, resume=False, on_epoch_end=None):
    return fit(model, data, Constant(1.0, epochs=EPOCHS), batch_size=CHUNK, full_batch=True, pseudocount=0.1,
               checkpoint_dir=checkpoint_dir, resume=resume, progress=False, on_epoch_end=on_epoch_end)


def _interrupt(epoch, history):
    if epoch + 1 == INTERRUPT_AFTER:
        raise Interrupted


def _full_batch_worker(rank, init_file, out_dir):
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    histories = {}
    for name, (model, data) in _full_batch_models().items():
        folder = out_dir / name
        try:
            _full_batch_fit(model, data, checkpoint_dir=folder, on_epoch_end=_interrupt)
        except Interrupted:
            pass
        dist.barrier()                     # rank 0 has written the checkpoint of epoch 2
        fresh, _ = _full_batch_models(seed=7)[name]
        histories[name] = _full_batch_fit(fresh, data, checkpoint_dir=folder, resume=True).as_dict()
        if rank == 1:
            save_file({k: g.values.contiguous() for k, g in fresh.parameter_groups().items()},
                      str(out_dir / f"{name}-rank1.safetensors"))
    if rank == 1:
        (out_dir / "histories.json").write_text(json.dumps(histories))
    dist.destroy_process_group()


def test_two_processes_full_batch_with_uneven_shards_and_resume_match_one(tmp_path):
    from safetensors.torch import load_file

    mp.spawn(_full_batch_worker, args=(str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    histories = json.loads((tmp_path / "histories.json").read_text())
    for name, (model, data) in _full_batch_models().items():
        history = _full_batch_fit(model, data)           # one process, uninterrupted
        trained = load_file(str(tmp_path / f"{name}-rank1.safetensors"))
        # float64 sums in another order (two shards, all_reduce): equal up to rounding
        for group_name, group in model.parameter_groups().items():
            torch.testing.assert_close(trained[group_name], group.values, rtol=1e-10, atol=1e-12)
        assert histories[name]["train_log_likelihood"] == pytest.approx(history.train_log_likelihood, rel=1e-10)
        assert len(histories[name]["train_log_likelihood"]) == EPOCHS
