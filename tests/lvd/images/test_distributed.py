"""The image recipe under two gloo processes gives the one-process models: features and K-means on shards, EM
counts, the Lemma-1 and latent steps all-reduced, evaluation sharded, rank 0 alone writing (results.json records the
world size and backend)."""
import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from hmmlvd.data import load_images
from hmmlvd.lvd.images.recipe import ImageRecipeConfig, train

CONFIG = ImageRecipeConfig(num_clusters=3, hidden_size=2, patch_size=4, latents="pixels", tied=True,
                           kmeans_backend="torch", models=("lvd", "em", "hclt"), lvd_epochs=1, latent_epochs=1, finetune_epochs=1, em_epochs=2,
                           batch_size=50, kmeans_iterations=5, kmeans_restarts=1, progress=False)


def trained(directory=None) -> dict[str, torch.Tensor]:
    """Every stage from the pixel teacher's features on: sharded features, K-means on the shards, Lemma 1, the
    latent step, fine-tuning and both baselines (151 images: shards of 76 and 75)."""
    images = load_images("digits", split="train").images
    result = train(images[:151], images[151:190], CONFIG, num_categories=17, directory=directory)
    values = {"assignments": result.assignments}
    for name, model in result.models.items():
        circuit = getattr(model.model, "circuit", model.model)
        values.update({f"{name}.{group}": g.values.contiguous() for group, g in circuit.parameter_groups().items()})
        values[f"{name}.valid_bpd"] = torch.tensor(model.valid_bpd, dtype=torch.float64)
    return values


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    values = trained(out_dir / "run")
    save_file(values, str(out_dir / f"rank{rank}.safetensors"))
    dist.destroy_process_group()


def test_two_processes_train_the_one_process_models(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    alone = trained()
    for rank in (0, 1):
        together = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert set(together) == set(alone)
        for name, values in alone.items():
            # the same sums in another order (two shards, all_reduce): equal to float32 rounding
            torch.testing.assert_close(together[name], values, rtol=1e-5, atol=1e-6, msg=name)
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["checkpoints", "em", "hclt", "lvd",
                                                                                   "stages"]
