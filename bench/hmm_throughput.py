"""Forward + backward + expected-count throughput of the HMM next to a plain GEMM.

For each h the script runs one child process (so peak memory is per configuration) that
times `HMM.accumulate_counts` on a [B, T] batch of random token ids (T = 32, V = 33,278)
and `torch.matmul` [B, h] @ [h, h] in the same process (each the best of several timings).
GFLOP/s counts 6·B·T·h² for the
forward–backward pass (three GEMMs per step) and 2·B·h² for the GEMM.

    python bench/hmm_throughput.py --states 128 256 512 1024 --batch 2048
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def _best_time(function, repeats: int, inner: int = 1) -> float:
    """The fastest of ``repeats`` timings (each the mean of ``inner`` calls): robust to a busy machine."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            function()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def measure(num_states: int, batch: int, vocab_size: int, seq_len: int, repeats: int, device: str,
            tf32: bool = False) -> dict:
    from hmmlvd import HMM, HMMConfig
    from hmmlvd.hmm.inference import gemm_precision

    hmm = HMM.random(HMMConfig(num_states, vocab_size, seq_len), seed=0, device=device)
    tokens = torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    relative_error = 0.0
    if tf32:
        reference = hmm.log_likelihood(tokens)                  # float32 GEMMs
        hmm.allow_tf32 = True
        relative_error = ((hmm.log_likelihood(tokens) - reference).abs() / reference.abs()).max().item()
    counts = hmm.zero_counts()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward_backward():
        hmm.accumulate_counts(tokens, counts)
        sync()

    left = torch.rand(batch, num_states, device=device)
    right = torch.rand(num_states, num_states, device=device)

    def gemm():
        with gemm_precision(hmm):
            torch.matmul(left, right)
        sync()

    seconds = _best_time(forward_backward, repeats)
    gemm_seconds = _best_time(gemm, repeats, inner=32)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"num_states": num_states, "batch": batch, "seconds_per_batch": seconds,
            "gflops": 6 * batch * seq_len * num_states ** 2 / seconds / 1e9,
            "gemm_gflops": 2 * batch * num_states ** 2 / gemm_seconds / 1e9,
            "peak_rss_gib": peak_rss / 2 ** 20, "model_and_counts_gib": 2 * hmm.num_parameters() * 4 / 2 ** 30,
            "max_relative_ll_change": relative_error,
            "pass_extra_rss_gib": (peak_rss - baseline_rss) / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--vocab-size", type=int, default=33_278)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tf32", action="store_true", help="opt in to TF32 GEMMs (CUDA); the last column is "
                                                          "the largest relative change of log p(x) it causes")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure(args.states[0], args.batch, args.vocab_size, args.seq_len, args.repeats,
                                 args.device, args.tf32)))
        return
    print(f"device={args.device} threads={torch.get_num_threads()} B={args.batch} T={args.seq_len} "
          f"V={args.vocab_size} tf32={args.tf32}")
    print(f"{'h':>6} {'s/batch':>9} {'fb GFLOP/s':>11} {'GEMM GFLOP/s':>13} {'ratio':>6} {'peak RSS GiB':>13} "
          f"{'params+counts GiB':>18} {'max rel. LL change':>19}")
    for num_states in args.states:
        command = [sys.executable, __file__, "--single", "--states", str(num_states), "--batch", str(args.batch),
                   "--vocab-size", str(args.vocab_size), "--seq-len", str(args.seq_len),
                   "--repeats", str(args.repeats), "--device", args.device] + (["--tf32"] if args.tf32 else [])
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"{num_states:>6} {row['seconds_per_batch']:>9.3f} {row['gflops']:>11.1f} {row['gemm_gflops']:>13.1f} "
              f"{row['gflops'] / row['gemm_gflops']:>6.2f} {row['peak_rss_gib']:>13.2f} "
              f"{row['model_and_counts_gib']:>18.2f} {row['max_relative_ll_change']:>19.1e}", flush=True)


if __name__ == "__main__":
    main()
