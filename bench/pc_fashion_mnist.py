"""Fashion-MNIST HCLT: forward+backward time per epoch and test bits-per-dimension after EM.

    python bench/pc_fashion_mnist.py --num-latents 16 32 64 --pseudocount 0.01 --threads 2

Pixels are 256-category variables. The Chow-Liu tree is learnt from the training images (all 60,000
unless ``--train-size`` takes the first N) with pixel values merged into ``--mi-bins`` bins for the
mutual information only. The timed epoch is one pass of forward + backward (expected counts) over the
training images; the per-60k column scales it linearly to the full training set.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from hmmlvd import em, pc
from hmmlvd.data import load_images
from hmmlvd.pc.structures import hclt
from pc_common import add_em_arguments, describe_em, mini_then_full_batch_em

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
    parser.add_argument("--test-size", type=int, default=10000)
    add_em_arguments(parser, minibatch_epochs=3, fullbatch_epochs=1)
    parser.add_argument("--mi-bins", type=int, default=8)
    parser.add_argument("--time-only", action="store_true", help="build and time one epoch; skip EM and the test")
    parser.add_argument("--root", default=None,
                        help="folder with the IDX files (default $HMMLVD_FASHION_MNIST, then Debian's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = (load_images("fashion-mnist", args.root, split).images.flatten(1).long()
                   for split in ("train", "test"))
    train, test = train[:args.train_size], test[:args.test_size]
    print(f"Fashion-MNIST: the first {len(train)} training images, test {len(test)}, {describe_em(args)}")
    print(f"{'k':>4} {'params':>10} {'build s':>8} {'fwd+bwd s/epoch':>16} {'(per 60k)':>10} "
          f"{'train s':>8} {'test bpd':>9}")
    for num_latents in args.num_latents:
        start = time.perf_counter()
        circuit = pc.Circuit(hclt(train, num_latents, 256, num_bins=args.mi_bins), seed=0, device=args.device)
        build = time.perf_counter() - start
        epoch = timed_epoch(circuit, train, args.batch_size)
        training, bpd = f"{'-':>8}", f"{'-':>9}"
        if not args.time_only:
            start = time.perf_counter()
            mini_then_full_batch_em(circuit, train, args)
            training = f"{time.perf_counter() - start:8.1f}"
            test_ll = em.mean_log_likelihood(circuit, test, 1024, circuit.device)
            bpd = f"{-test_ll / (test.shape[1] * math.log(2)):9.4f}"
        print(f"{num_latents:4d} {circuit.num_parameters:10d} {build:8.1f} {epoch:16.1f} "
              f"{epoch * FULL_TRAIN / len(train):10.1f} {training} {bpd}", flush=True)


if __name__ == "__main__":
    main()
