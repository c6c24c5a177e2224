"""``distill-lm`` under two gloo processes: the ranks draw interleaved shards of samples, rank 0 writes them, and
the samples and the distilled HMM equal those of one process."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd import HMM
from hmmlvd.data.lm_samples import SampleSettings
from hmmlvd.io import load_tensors, save_tensors
from hmmlvd.lvd.causal_lm import lm_samples, load_causal_lm
from hmmlvd.lvd.lm_recipe import DistillLMConfig, distill_lm
from hmmlvd.lvd.recipe import RecipeConfig
from tests.tiny_lm import save_tiny_gpt2

SETTINGS = SampleSettings(num_tokens=6, shard_size=8, batch_size=8)


def config(folder, tmp_path, name):
    recipe = RecipeConfig.preset("quick", num_states=3, lvd_windows=0, phase1_epochs=1, phase2_epochs=1,
                                 batch_size=16, eval_splits="test", eval_protocols="chunk", progress=False,
                                 device="cpu", kmeans_backend="torch", cache_dir=str(tmp_path / f"emb-{name}"))
    return DistillLMConfig(str(folder), recipe, num_samples=40, heldout_samples=8, sampling=SETTINGS,
                           teacher="hidden", sample_cache_dir=str(tmp_path / f"samples-{name}"))


def _worker(rank, init_file, folder, tmp_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, tokenizer = load_causal_lm(folder, "cpu")
    tokens, log_probs = lm_samples(model, tokenizer, 40, SETTINGS, cache_dir=tmp_path / "two", progress=False)
    save_tensors(tmp_path / f"rank{rank}.safetensors", {"tokens": tokens, "log_probs": log_probs})
    distill_lm(config(folder, tmp_path, "two"), tmp_path / "hmm-two")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_sample_and_distil_what_one_does(tmp_path):
    folder = save_tiny_gpt2(tmp_path / "lm")
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(folder), tmp_path), nprocs=2, join=True)
    model, tokenizer = load_causal_lm(folder, "cpu")
    tokens, log_probs = lm_samples(model, tokenizer, 40, SETTINGS, cache_dir=tmp_path / "one", progress=False)
    for rank in range(2):
        part = load_tensors(tmp_path / f"rank{rank}.safetensors")[0]
        assert torch.equal(part["tokens"], tokens) and torch.equal(part["log_probs"], log_probs)
    written = sorted(p.name for p in (tmp_path / "two").glob("*/shard-*.safetensors"))
    assert written == [f"shard-{i:06d}.safetensors" for i in range(5)]         # each shard once, by rank 0
    distill_lm(config(folder, tmp_path, "one"), tmp_path / "hmm-one")
    one, two = HMM.from_pretrained(tmp_path / "hmm-one"), HMM.from_pretrained(tmp_path / "hmm-two")
    for name, group in one.parameter_groups().items():
        torch.testing.assert_close(two.parameter_groups()[name].values, group.values, rtol=0, atol=1e-6)
