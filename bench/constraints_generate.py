"""Constrained generation cost: 32 tokens under a 3-keyword constraint, h=256, V=33,278 (random HMM).

Prints, measured side by side in one run:
  * the DP (future tables) over the window and its cost per position, split into the edge-aggregated
    emissions (sparse: explicit tokens + one default edge per DFA state) and the [Q,h]@[h,h] matmul;
  * the same aggregation done densely (a 0/1 [E, V] edge mask times the [V, h] emissions), for the ratio;
  * end-to-end generation of 32 tokens with and without the constraint (same sampling loop), and the ratio.

Run: flock /tmp/hmmlvd-heavy.lock python bench/constraints_generate.py
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.constraints import ConstraintTables, all_of, sample_constrained
from hmmlvd.lm import LanguageModel


class SyntheticWords:
    """A word tokenizer over the made-up words w0 .. w{V-1} (id = number)."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.unk_id = vocab_size, None

    def encode(self, text: str) -> list[int]:
        return [int(word[1:]) for word in text.split()]

    def decode(self, ids) -> str:
        return " ".join(f"w{i}" for i in ids)


def timed(function, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def dense_edge_mask(dfa, vocab_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The DFA's edges as a dense 0/1 [E, V] token mask (the naive way to aggregate emissions)."""
    edges = dfa.edges()
    mask = torch.zeros(len(edges), vocab_size, dtype=dtype)
    for index, edge in enumerate(edges):
        mask[index, edge.tokens.to_list(vocab_size)] = 1
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-states", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=33_278)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU only")
    start = time.perf_counter()
    hmm = HMM.random(HMMConfig(args.num_states, args.vocab_size, args.seq_len), seed=0)
    print(f"random HMM h={args.num_states} V={args.vocab_size} T={args.seq_len} fp32 "
          f"({time.perf_counter() - start:.1f} s to build)")
    keywords = [[v] for v in (101, args.vocab_size // 2, args.vocab_size - 7)]
    dfa = all_of(keywords, args.vocab_size)
    print(f"constraint: all of {keywords} -> DFA with {dfa.num_states} states, {len(dfa.edges())} edges")
    steps = args.new_tokens - 1

    dp_time, tables = timed(lambda: ConstraintTables(hmm, dfa, 0, args.new_tokens), args.repeats)
    emission = hmm.emission_matrix(5)
    sparse_time, sparse = timed(lambda: tables.edges.aggregate(emission, emission.sum(dim=0)), args.repeats * 3)
    mask = dense_edge_mask(dfa, args.vocab_size, emission.dtype)
    dense_time, dense = timed(lambda: mask @ emission, args.repeats)
    error = (sparse - dense.double()).abs().max().item()
    future = torch.rand(dfa.num_states, args.num_states, dtype=torch.float64)
    matmul_time, _ = timed(lambda: future @ hmm.transition_matrix(5).double().T, args.repeats * 3)
    print(f"\nDP over {args.new_tokens} positions: {dp_time * 1e3:.1f} ms = "
          f"{dp_time / steps * 1e3:.2f} ms per position")
    print(f"  per position: edge aggregation (sparse) {sparse_time * 1e3:.2f} ms, [Q,h]@[h,h] matmul "
          f"{matmul_time * 1e3:.3f} ms")
    print(f"  dense [E,V]@[V,h] aggregation {dense_time * 1e3:.2f} ms -> sparse is {dense_time / sparse_time:.1f}x "
          f"faster (max abs difference {error:.1e})")

    lm = LanguageModel(hmm, SyntheticWords(args.vocab_size))
    print(f"\ngenerate {args.new_tokens} tokens (empty prefix), best of {args.repeats}:")
    print(f"{'batch':>6} {'unconstrained s':>16} {'constrained s':>14} {'ratio':>6} {'ms/token (constr.)':>19}")
    for batch in args.batch:
        plain, _ = timed(lambda: lm.generate_ids("", args.new_tokens, seed=0, num_samples=batch), args.repeats)
        guided, samples = timed(lambda: lm.generate_ids("", args.new_tokens, seed=0, constraint=dfa,
                                                        num_samples=batch), args.repeats)
        assert all(dfa.accepts(row) for row in samples)
        print(f"{batch:>6} {plain:>16.3f} {guided:>14.3f} {guided / plain:>6.2f} "
              f"{guided / args.new_tokens * 1e3:>19.1f}")
    prefix = torch.zeros(1, 0, dtype=torch.long)
    sampling_time, _ = timed(lambda: sample_constrained(hmm, dfa, prefix, args.new_tokens), args.repeats)
    print(f"\nof which the DP: {dp_time / sampling_time:.0%} of one constrained batch-1 generation "
          f"({sampling_time:.3f} s)")


if __name__ == "__main__":
    main()
