"""Fashion-MNIST HCLT: forward+backward time per epoch and test bits-per-dimension after ``pc.train_hclt``.

    flock /tmp/hmmlvd-cpu.lock python bench/pc_fashion_mnist.py --num-latents 16 32 64 --pseudocount 0.01

Pixels are 256-category variables. The Chow-Liu tree is learnt from the training images (the official training
split less its last ``--valid-size`` images, which are the validation split; ``--train-size`` takes the first N of
the rest) with pixel values merged into ``--mi-bins`` bins for the mutual information only. Each hidden size is one
``pc.train_hclt`` trial (a recipe with one size and one setting: no search): mini-batch EM, then full-batch EM,
keeping the best validation epoch. The timed epoch is one pass of forward + backward (expected counts) over the
training images; the per-60k column scales it linearly to 60,000 images. ``train s`` includes the structure
build of ``pc.train_hclt``.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import torch

from hmmlvd import em, pc
from hmmlvd.data import load_images, train_valid_split
from hmmlvd.pc.structures import hclt

FULL_TRAIN = 60000


def timed_epoch(circuit: pc.Circuit, data: torch.Tensor, batch_size: int) -> float:
    """Seconds for one forward + backward pass over ``data``."""
    counts = circuit.zero_counts()
    circuit.accumulate_counts(data[:batch_size], counts)                # warm-up (CUDA kernels, allocator)
    _synchronize(circuit.device)
    start = time.perf_counter()
    for begin in range(0, len(data), batch_size):
        circuit.accumulate_counts(data[begin:begin + batch_size], counts)
    _synchronize(circuit.device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-latents", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--train-size", type=int, default=FULL_TRAIN, help="training images (the first N)")
    parser.add_argument("--valid-size", type=int, default=5000, help="the last images of the official train split")
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--minibatch-epochs", type=int, default=3)
    parser.add_argument("--fullbatch-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--step-start", type=float, default=0.5, help="mini-batch η, annealed linearly ...")
    parser.add_argument("--step-end", type=float, default=0.05, help="... to this value")
    parser.add_argument("--pseudocount", type=float, default=0.1)
    parser.add_argument("--mi-bins", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--device", default="cpu", help="torch device of the circuit (cpu, cuda)")
    parser.add_argument("--time-only", action="store_true", help="build and time one epoch; skip EM and the test")
    parser.add_argument("--root", default=None,
                        help="folder with the IDX files (default $HMMLVD_FASHION_MNIST, then Debian's)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_set, valid_set = train_valid_split(load_images("fashion-mnist", args.root, "train"), args.valid_size)
    train, valid = train_set.images.flatten(1)[:args.train_size], valid_set.images.flatten(1)
    test = load_images("fashion-mnist", args.root, "test").images.flatten(1)[:args.test_size].long()
    recipe = pc.HCLTRecipe(grid=(pc.Regularization(args.pseudocount),), minibatch_epochs=args.minibatch_epochs,
                           fullbatch_epochs=args.fullbatch_epochs, batch_size=args.batch_size,
                           step_start=args.step_start, step_end=args.step_end, mi_bins=args.mi_bins,
                           time_budget=None, device=args.device)
    print(f"Fashion-MNIST: the first {len(train)} training images, valid {len(valid)}, test {len(test)}; "
          f"{recipe.minibatch_epochs} mini-batch epochs (batch {recipe.batch_size}, η {recipe.step_start}->"
          f"{recipe.step_end}) + {recipe.fullbatch_epochs} full-batch, pseudocount {args.pseudocount}, "
          f"{args.threads} thread(s), device {args.device}")
    print(f"{'k':>4} {'params':>10} {'build s':>8} {'fwd+bwd s/epoch':>16} {'(per 60k)':>10} "
          f"{'train s':>8} {'best epoch':>14} {'test bpd':>9}")
    for num_latents in args.num_latents:
        start = time.perf_counter()
        circuit = pc.Circuit(hclt(train.long(), num_latents, 256, num_bins=args.mi_bins), seed=0, device=args.device)
        build = time.perf_counter() - start
        epoch = timed_epoch(circuit, train.long(), args.batch_size)
        training, best_epoch, bpd = f"{'-':>8}", f"{'-':>14}", f"{'-':>9}"
        if not args.time_only:
            start = time.perf_counter()
            result = pc.train_hclt(train, valid, replace(recipe, hidden_sizes=(num_latents,)),
                                   num_categories=256, progress=args.progress)
            training, best_epoch = f"{time.perf_counter() - start:8.1f}", f"{result.best_epoch:>14}"
            test_ll = em.mean_log_likelihood(result.circuit, test, 1024, result.circuit.device)
            bpd = f"{-test_ll / (test.shape[1] * math.log(2)):9.4f}"
        print(f"{num_latents:4d} {circuit.num_parameters:10d} {build:8.1f} {epoch:16.1f} "
              f"{epoch * FULL_TRAIN / len(train):10.1f} {training} {best_epoch} {bpd}", flush=True)


if __name__ == "__main__":
    main()
