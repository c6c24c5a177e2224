"""Patch-circuit cost on Fashion-MNIST-shaped random data (P = 49 patches of D = 16 values, 256 categories).

For each (k clusters, hidden size H, tied) it reports the parameter count, the time of one batch of full EM
counts (forward + backward over every (patch, cluster) sub-circuit), one M-step, the time of one batch of
Lemma-1 complete-data counts (each patch through its assigned sub-circuit only), and the peak resident memory
of a fresh process that builds the model and runs them (each configuration runs in its own subprocess so that
the peaks are separate). "EM s/epoch (60k)" is (counts + M-step) per batch times the 60,000 / batch-size
batches of a Fashion-MNIST epoch.

    PYTHONPATH=. python bench/patch_circuit_speed.py --threads 2 --repeats 1 \
        --sizes 16,4,0 16,16,0 32,8,0 64,4,0 64,16,0 16,16,1 64,16,1 256,16,1
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from hmmlvd import em, pc

PATCHES, VALUES, CATEGORIES = 49, 16, 256


def config_for(clusters: int, hidden: int, tied: bool) -> pc.PatchCircuitConfig:
    return pc.PatchCircuitConfig(num_patches=PATCHES, values_per_patch=VALUES, num_clusters=clusters,
                                 hidden_size=hidden, num_categories=CATEGORIES, tied=tied)


def measure(clusters: int, hidden: int, tied: bool, batch_size: int, repeats: int, device: str) -> dict:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, CATEGORIES, (batch_size, PATCHES, VALUES), generator=generator)
    z = torch.randint(0, clusters, (batch_size, PATCHES), generator=generator)
    circuit = pc.PatchCircuit(config_for(clusters, hidden, tied), device=device)
    timings = {}
    for name, step in (("em_counts_s", lambda counts: circuit.accumulate_counts(x, counts)),
                       ("lvd_counts_s", lambda counts: pc.accumulate_complete_counts(circuit, x, z, counts))):
        counts = circuit.zero_counts()
        step(counts)                                                          # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            step(counts)
        if device == "cuda":
            torch.cuda.synchronize()
        timings[name] = (time.perf_counter() - start) / repeats
    counts = circuit.zero_counts()
    circuit.accumulate_counts(x, counts)
    start = time.perf_counter()
    circuit.set_parameters(em.apply_m_step(circuit.parameter_groups(), counts, pseudocount=0.1, step_size=0.5,
                                           overwrite_counts=True))
    if device == "cuda":
        torch.cuda.synchronize()
    timings["m_step_s"] = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"k": clusters, "H": hidden, "tied": tied, "parameters": circuit.num_parameters,
            "batch": batch_size, **timings, "peak_mib": peak / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", help="k,H,tied triples (tied 0/1)",
                        default=["16,4,0", "16,16,0", "32,8,0", "16,16,1", "64,16,1", "256,16,1"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        clusters, hidden, tied = (int(v) for v in args.one.split(","))
        print(json.dumps(measure(clusters, hidden, bool(tied), args.batch_size, args.repeats, args.device)))
        return
    print(f"P={PATCHES}, D={VALUES}, {CATEGORIES} categories, batch {args.batch_size}, {args.threads} thread(s), "
          f"device {args.device}, float32; times are per batch, mean of {args.repeats} after one warm-up")
    print("| k | H | tied | parameters | EM counts s/batch | M-step s | LVD counts s/batch | EM s/epoch (60k) | "
          "peak MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        command = [sys.executable, __file__, "--one", size, "--batch-size", str(args.batch_size), "--repeats",
                   str(args.repeats), "--threads", str(args.threads), "--device", args.device]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        epoch = (result["em_counts_s"] + result["m_step_s"]) * 60000 / args.batch_size
        print(f"| {result['k']} | {result['H']} | {'yes' if result['tied'] else 'no'} | {result['parameters']:,} | "
              f"{result['em_counts_s']:.2f} | {result['m_step_s']:.2f} | {result['lvd_counts_s']:.3f} | {epoch:.0f} | "
              f"{result['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
