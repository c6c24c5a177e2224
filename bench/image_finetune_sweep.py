"""Fine-tuning settings compared from one saved start: the M-step pseudocount of LVD's last stage (EM on x).

Every run loads the same saved patch image model (for example the ``stages/latent`` folder an ``hmmlvd image
train --out DIR`` run keeps: the circuit after Lemma 1 and the latent step), fine-tunes it by mini-batch EM with
the recipe's fine-tuning schedule and batch (``ImageRecipeConfig``: step ``--step`` annealed to a tenth over
``--epochs``, batch 256, seed 0) and one
pseudocount, and records the valid curve and the final valid, test and training bits per dimension (the training
figure on the first 10,000 training images, to show the gap). Valid is the last ``--valid-size`` training images.

    python bench/image_finetune_sweep.py --start runs/k128/stages/latent --pseudocounts 1 0.1 0.01 0.001 \\
        --epochs 4 --json bench/results/image_finetune_pseudocount.json
"""
from __future__ import annotations

import argparse
import time

import torch

from hmmlvd import em
from hmmlvd.data import IMAGE_DATASETS, load_images, train_valid_split
from hmmlvd.io import atomic_write_json
from hmmlvd.lvd.images.config import ImageRecipeConfig
from hmmlvd.lvd.images.model import PatchImageModel
from hmmlvd.lvd.images.stages import bits_per_dimension, model_bits_per_dimension


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", required=True, help="a saved PatchImageModel folder to fine-tune from")
    parser.add_argument("--pseudocounts", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--step", type=float, default=0.1, help="first step size (annealed to a tenth)")
    parser.add_argument("--dataset", choices=IMAGE_DATASETS, default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--valid-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write every run to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, valid = train_valid_split(load_images(args.dataset, args.data_dir, "train"), args.valid_size)
    test = load_images(args.dataset, args.data_dir, "test")
    config = ImageRecipeConfig(finetune_epochs=args.epochs, finetune_step_start=args.step)
    model = PatchImageModel.from_pretrained(args.start)
    x_train, x_valid = model.patches(train.images), model.patches(valid.images)
    rows = []
    for pseudocount in args.pseudocounts:
        model = PatchImageModel.from_pretrained(args.start)
        start = time.perf_counter()
        history = em.fit(model.circuit, x_train, config.finetune_schedule(), valid=x_valid,
                         batch_size=config.batch_size, pseudocount=pseudocount, seed=config.seed, progress=False)
        row = {"pseudocount": pseudocount, "epochs": args.epochs, "step": args.step,
               "valid_curve": [bits_per_dimension(ll, model.num_dimensions) for ll in history.valid_log_likelihood],
               "seconds": time.perf_counter() - start,
               "valid_bpd": model_bits_per_dimension(model, valid.images),
               "test_bpd": model_bits_per_dimension(model, test.images),
               "train_bpd_first_10k": model_bits_per_dimension(model, train.images[:10_000])}
        rows.append(row)
        print(f"pseudocount {pseudocount:g}: valid {row['valid_bpd']:.4f}, test {row['test_bpd']:.4f}, "
              f"train (10k) {row['train_bpd_first_10k']:.4f} bpd ({row['seconds']:.0f} s)", flush=True)
        if args.json:
            atomic_write_json(args.json, {"start": args.start, "dataset": args.dataset, "runs": rows})


if __name__ == "__main__":
    main()
