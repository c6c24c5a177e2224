"""Fashion-MNIST: LVD patch circuits against the same circuits trained by EM alone and pixel HCLTs of
comparable size, all with the same EM budget, at several sizes (the analogue of the paper's Figure 1 left).

    python bench/image_lvd.py --threads 2 --out bench/image_lvd.json
    python scripts/image_bpd_plot.py bench/image_lvd.json --out bench/image_lvd.png

The teacher is trained once (cached) and the patch features are computed once; each size then clusters them
with its own k and trains the three models. ``--latents pixels`` clusters the patch values instead (no teacher);
``--em-epochs`` gives the baselines their own epoch count, for comparisons at equal measured time. Test bits per
dimension: −log2 p(x) / 784 over the 10,000 test
images; the last ``--valid-size`` training images are the validation split.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from hmmlvd.data import IMAGE_DATASETS, load_images, train_valid_split
from hmmlvd.data.patches import default_patch_size
from hmmlvd.io import atomic_write_json
from hmmlvd.lvd.images import distil_latents, teacher_for
from hmmlvd.lvd.images.config import LATENT_SOURCES, MODELS, PATCH_STATES, ImageRecipeConfig
from hmmlvd.lvd.images.features import CONTEXTS
from hmmlvd.lvd.images.recipe import train


def size(text: str) -> tuple[int, int, bool]:
    """``k,H`` or ``k,H,tied``."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a size is k,H or k,H,tied, got {text!r}")
    return int(parts[0]), int(parts[1]), len(parts) == 3 and parts[2] in ("1", "tied", "true")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=size, nargs="+", default=[(8, 4, False), (16, 4, False), (32, 4, False),
                                                                   (32, 8, False)],
                        help="model sizes as k,H (untied) or k,H,tied: latent categories per patch, hidden size "
                             "of each patch model")
    parser.add_argument("--train-size", type=int, default=None, help="first N training images (default all)")
    parser.add_argument("--valid-size", type=int, default=5000,
                        help="the last N of the 60,000 training images form the validation split")
    parser.add_argument("--test-size", type=int, default=None, help="first N test images (default all)")
    parser.add_argument("--teacher-epochs", type=int, default=6, help="MAE training epochs (--latents mae)")
    parser.add_argument("--context", default="mst", choices=CONTEXTS,
                        help="patches visible when a patch's feature is taken (--latents mae)")
    parser.add_argument("--lvd-epochs", type=int, default=3, help="LVD: Lemma-1 epochs (latents observed)")
    parser.add_argument("--latent-epochs", type=int, default=1,
                        help="LVD: epochs fitting p(Z) with the patch circuits fixed")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="LVD: EM epochs on x after distillation")
    parser.add_argument("--finetune-step", type=float, default=None,
                        help="LVD: the fine-tuning step size's start, annealed to a tenth (default: the recipe's)")
    parser.add_argument("--em-epochs", type=int, default=None,
                        help="EM epochs of each baseline (default: LVD's epochs of all three stages)")
    parser.add_argument("--latents", choices=LATENT_SOURCES, default="mae",
                        help="what K-means clusters into Z: the MAE's patch features or the patch pixels")
    parser.add_argument("--kmeans-iterations", type=int, default=ImageRecipeConfig.kmeans_iterations,
                        help="Lloyd iterations of each K-means")
    parser.add_argument("--kmeans-restarts", type=int, default=ImageRecipeConfig.kmeans_restarts,
                        help="K-means runs from different seeds; the one with the lowest objective is kept")
    parser.add_argument("--patch-states", choices=PATCH_STATES, default=ImageRecipeConfig.patch_states,
                        help="LVD: the patch models' start before Lemma 1 (bins: closed form on binned states)")
    parser.add_argument("--seed", type=int, default=0, help="seed of K-means, the circuits' parameters and batches")
    parser.add_argument("--pseudocount", type=float, default=ImageRecipeConfig.pseudocount,
                        help="EM M-step pseudocount of every model and stage")
    parser.add_argument("--models", nargs="+", default=["lvd", "em", "hclt"], choices=MODELS,
                        help="lvd: distilled patch circuit; em: the same circuit by EM alone; hclt: pixel HCLT")
    parser.add_argument("--dataset", choices=IMAGE_DATASETS, default="fashion-mnist", help="image dataset")
    parser.add_argument("--data-dir", default=None, help="the dataset's folder (default: as hmmlvd image train)")
    parser.add_argument("--work-dir", default="runs/image_lvd", help="where the features and latents are kept")
    parser.add_argument("--cache-dir", default=None,
                        help="teacher cache (default: $HMMLVD_CACHE/teachers, else ~/.cache/hmmlvd/teachers)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default="bench/results/image_lvd.json",
                        help="results JSON (rewritten after each size)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_set, valid_set = train_valid_split(load_images(args.dataset, args.data_dir, "train"), args.valid_size)
    train_images = train_set.images[:args.train_size]
    test_images = load_images(args.dataset, args.data_dir, "test").images[:args.test_size]
    budget = dict(lvd_epochs=args.lvd_epochs, latent_epochs=args.latent_epochs, finetune_epochs=args.finetune_epochs,
                  finetune_step_start=args.finetune_step,
                  em_epochs=args.em_epochs, latents=args.latents, models=tuple(args.models), progress=False,
                  kmeans_iterations=args.kmeans_iterations, kmeans_restarts=args.kmeans_restarts, seed=args.seed,
                  pseudocount=args.pseudocount,
                  patch_states=args.patch_states, teacher_epochs=args.teacher_epochs, context=args.context,
                  cache_dir=args.cache_dir)
    print(f"{args.dataset}: {len(train_images)} train, {len(valid_set)} valid, {len(test_images)} test images; "
          f"LVD {args.lvd_epochs}+{args.latent_epochs}+{args.finetune_epochs} epochs, baselines "
          f"{ImageRecipeConfig(**budget).baseline_epochs}; latents from {args.latents}", flush=True)
    start = time.perf_counter()
    teacher = teacher_for(train_images, ImageRecipeConfig(**budget), default_patch_size(train_images.shape[-1]),
                          directory=args.work_dir, resume=True)
    teacher_seconds, feature_seconds = time.perf_counter() - start, 0.0

    rows = []
    print(f"{'k':>4} {'H':>3} {'tied':>5} {'model':>6} {'params':>12} {'test bpd':>9} {'valid bpd':>9} {'s':>6}")
    for clusters, hidden, tied in args.sizes:
        config = ImageRecipeConfig(num_clusters=clusters, hidden_size=hidden, tied=tied, **budget)
        assignments, kmeans_seconds = None, 0.0
        if config.needs_latents:
            latents = distil_latents(teacher, train_images, config, directory=args.work_dir, resume=True,
                                     log=lambda line: print(f"      {line}", flush=True))
            assignments, kmeans_seconds = latents.assignments, latents.seconds.get("kmeans", 0.0)
            feature_seconds += latents.seconds.get("features", 0.0)
        result = train(train_images, valid_set.images, config, test_images=test_images, assignments=assignments,
                       log=lambda line: print(f"      {line}", flush=True))
        for trained in result.models.values():
            seconds = sum(v for k, v in trained.seconds.items() if k != "num_latents")
            rows.append({"num_clusters": clusters, "hidden_size": hidden, "tied": tied, **trained.row(),
                         "kmeans_seconds": kmeans_seconds})
            print(f"{clusters:4d} {hidden:3d} {str(tied):>5} {trained.name:>6} {trained.num_parameters:12,d} "
                  f"{trained.test_bpd:9.4f} {trained.valid_bpd:9.4f} {seconds:6.0f}", flush=True)
        if {"lvd", "em"} <= set(result.models):
            margin = result.models["em"].test_bpd - result.models["lvd"].test_bpd
            print(f"      LVD margin over EM alone: {margin:+.4f} bpd", flush=True)
        atomic_write_json(args.out, {"dataset": args.dataset, "train_images": len(train_images),
                                     "test_images": len(test_images),
                                     "teacher_seconds": teacher_seconds, "feature_seconds": feature_seconds,
                                     "budget": [args.lvd_epochs, args.latent_epochs, args.finetune_epochs],
                                     "pseudocount": args.pseudocount,
                                     "finetune_step": config.finetune_schedule().start,
                                     "em_epochs": config.baseline_epochs, "latents": args.latents,
                                     "kmeans": [args.kmeans_iterations, args.kmeans_restarts], "seed": args.seed,
                                     "patch_states": args.patch_states,
                                     "rows": rows})
    print(json.dumps({"written": args.out}))


if __name__ == "__main__":
    main()
