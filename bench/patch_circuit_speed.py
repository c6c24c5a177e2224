"""Patch-circuit cost on Fashion-MNIST-shaped random data (P = 49 patches of D = 16 values, 256 categories).

For each (k clusters, hidden size H, tied) one child process builds the circuit and times, per batch: full EM
counts (forward + backward + expected counts over every (patch, cluster) sub-circuit), one M-step, the Lemma-1
complete-data counts (each patch through its assigned sub-circuit only) and the latent step (the cluster
log-likelihoods, then the counts of p(Z)). In the same process it times a ``torch.matmul`` GEMM
[2048, 1024] @ [1024, 1024]; "GFLOP/s" counts 6·B·P·k·(D−1)·H² for full EM counts (three H×H products per
edge, column and sub-circuit) and "ratio" divides it by the GEMM's rate. Every figure is the best of
``--repeats`` timings after one warm-up. Per-epoch columns scale the per-batch times to 55,000 images (the
Fashion-MNIST training split); "peak MiB" is the child's peak resident memory.

``--compare-with DIR`` also runs the ``hmmlvd`` package found in DIR (e.g. ``git archive main hmmlvd | tar -x -C
/tmp/main``): for every size, ``--rounds`` rounds each run the old child and then the new one, every round is
printed with each version's median time and ratio over the rounds, and the speed-ups divide the best old time by
the best new one, and (on a shared host, the steadier figure) take the median over rounds of each round's old
time over its new one.

    PYTHONPATH=. python bench/patch_circuit_speed.py --threads 2 --sizes 64,16,1 64,4,1 16,16,0 \\
        --compare-with /tmp/main --json bench/results/patch_circuit_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PATCHES, VALUES, CATEGORIES, IMAGES = 49, 16, 256, 55_000


def _best(function, repeats: int, sync) -> float:
    function()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure(clusters: int, hidden: int, tied: bool, batch_size: int, repeats: int, device: str) -> dict:
    import torch
    from hmmlvd import em, pc

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, CATEGORIES, (batch_size, PATCHES, VALUES), generator=generator)
    z = torch.randint(0, clusters, (batch_size, PATCHES), generator=generator)
    config = pc.PatchCircuitConfig(num_patches=PATCHES, values_per_patch=VALUES, num_clusters=clusters,
                                   hidden_size=hidden, num_categories=CATEGORIES, tied=tied)
    circuit = pc.PatchCircuit(config, device=device)
    counts = circuit.zero_counts()

    def latent_step():
        circuit.accumulate_latent_counts(circuit.cluster_log_likelihoods(x), counts)

    left, right = torch.rand(2048, 1024, device=device), torch.rand(1024, 1024, device=device)
    gemm_s = _best(lambda: torch.matmul(left, right), 3 * repeats, sync)
    timings = {"em_counts_s": _best(lambda: circuit.accumulate_counts(x, counts), repeats, sync),
               "lvd_counts_s": _best(lambda: pc.accumulate_complete_counts(circuit, x, z, counts), repeats, sync),
               "latent_step_s": _best(latent_step, repeats, sync)}
    gemm_s = min(gemm_s, _best(lambda: torch.matmul(left, right), 3 * repeats, sync))
    counts = circuit.zero_counts()
    circuit.accumulate_counts(x, counts)
    start = time.perf_counter()
    circuit.set_parameters(em.apply_m_step(circuit.parameter_groups(), counts, pseudocount=0.1, step_size=0.5,
                                           overwrite_counts=True))
    sync()
    timings["m_step_s"] = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    flops = 6 * batch_size * PATCHES * clusters * (VALUES - 1) * hidden ** 2
    gflops, gemm_gflops = flops / timings["em_counts_s"] / 1e9, 2 * 2048 * 1024 * 1024 / gemm_s / 1e9
    batches = IMAGES / batch_size
    return {"k": clusters, "H": hidden, "tied": tied, "parameters": circuit.num_parameters, "batch": batch_size,
            **timings, "em_gflops": gflops, "gemm_gflops": gemm_gflops, "ratio": gflops / gemm_gflops,
            "lvd_epoch_s": timings["lvd_counts_s"] * batches, "latent_epoch_s": timings["latent_step_s"] * batches,
            "em_epoch_s": (timings["em_counts_s"] + timings["m_step_s"]) * batches, "peak_mib": peak / 2 ** 20}


def _cpu() -> str:
    """The CPU's model name and number (/proc/cpuinfo), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line and line.strip())
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    except OSError:
        import platform
        return platform.processor() or platform.machine()


def _paired_ratio(rows: list[dict], key: str) -> float:
    """The median over rounds of the old time over the new one (each round's two children ran back to back, so a
    slow spell of a shared host falls on both sides of most ratios, where it moves the best times apart)."""
    by_round = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["version"]] = row[key]
    return statistics.median(times["old"] / times["new"] for times in by_round.values())


def _child(size: str, root: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--one", size, "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--device", args.device]
    environment = {**os.environ, "PYTHONPATH": root}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", help="k,H,tied triples (tied 0/1)", default=["64,16,1", "64,4,1",
                                                                                          "16,16,0", "16,4,0"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compare-with", help="a directory holding another version's hmmlvd package")
    parser.add_argument("--json", help="write every row to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import torch
        torch.set_num_threads(args.threads)
        clusters, hidden, tied = (int(v) for v in args.one.split(","))
        print(json.dumps(measure(clusters, hidden, bool(tied), args.batch_size, args.repeats, args.device)))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    versions = {"new": here, **({"old": os.path.abspath(args.compare_with)} if args.compare_with else {})}
    print(f"P={PATCHES}, D={VALUES}, {CATEGORIES} categories, batch {args.batch_size}, {args.threads} thread(s), "
          f"device {args.device}, float32; best of {args.repeats} per batch; epochs of {IMAGES:,} images")
    print("| k | H | tied | version | EM counts s/batch | GFLOP/s | GEMM GFLOP/s | ratio | Lemma-1 s/epoch | "
          "latent step s/epoch | EM s/epoch | peak MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for size in args.sizes:
        best, size_rows = {}, []
        for round_number, (name, root) in ((r, v) for r in range(args.rounds) for v in reversed(versions.items())):
            row = {**_child(size, root, args), "version": name, "round": round_number}
            rows.append(row)
            size_rows.append(row)
            best[name] = {key: min(value, best.get(name, row)[key]) for key, value in row.items()
                          if key.endswith("_s")}
            print(f"| {row['k']} | {row['H']} | {'yes' if row['tied'] else 'no'} | {name} | {row['em_counts_s']:.3f} | "
                  f"{row['em_gflops']:.1f} | {row['gemm_gflops']:.0f} | {row['ratio']:.3f} | {row['lvd_epoch_s']:.1f} | "
                  f"{row['latent_epoch_s']:.1f} | {row['em_epoch_s']:.0f} | {row['peak_mib']:.0f} |", flush=True)
        if args.rounds > 1:
            for name in reversed(versions):
                own = [row for row in size_rows if row["version"] == name]
                print(f"|  |  |  | {name}, median of rounds | "
                      f"{statistics.median(row['em_counts_s'] for row in own):.3f} |  |  | "
                      f"{statistics.median(row['ratio'] for row in own):.3f} |  |  |  | |", flush=True)
        if "old" in best:
            old, new = best["old"], best["new"]
            print(f"|  |  |  | old/new time | {old['em_counts_s'] / new['em_counts_s']:.2f}× |  |  |  | "
                  f"{old['lvd_counts_s'] / new['lvd_counts_s']:.2f}× | "
                  f"{old['latent_step_s'] / new['latent_step_s']:.2f}× |  | |", flush=True)
            paired = {key: _paired_ratio(size_rows, key) for key in ("em_counts_s", "lvd_counts_s", "latent_step_s")}
            print(f"|  |  |  | old/new, median of rounds | {paired['em_counts_s']:.2f}× |  |  |  | "
                  f"{paired['lvd_counts_s']:.2f}× | {paired['latent_step_s']:.2f}× |  | |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "cpu": _cpu(), "cpus": os.cpu_count(), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
