"""Homogeneous HMM EM: hmmlvd next to hmmlearn's CategoricalHMM and pomegranate's DenseHMM.

All three start from the same parameters on the same WikiText-2 training windows and run
one EM iteration. The script reports seconds per iteration, the peak extra resident memory
of the iteration (each library in its own process) and the agreement of the results:
hmmlearn's updated model must give the same log-likelihood as ours (1e-4 relative);
pomegranate models an end-state distribution, so after an update its model differs by
construction: we compare its E-step instead (log-likelihood and expected transition counts).

    python bench/hmm_vs_peers.py --data-dir ../shared/data/wikitext-2 --states 64 256 --windows 2048 256
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch


def _current_rss_gib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


class PeakMemory:
    """Peak resident memory above the level at entry, sampled every millisecond by a thread."""

    def __enter__(self):
        self.baseline = self.peak = _current_rss_gib()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _current_rss_gib())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.extra_gib = self.peak - self.baseline


def _setup(args):
    from hmmlvd import HMM, HMMConfig
    from hmmlvd.data import chunk_windows, wikitext2

    corpus = wikitext2(args.data_dir)
    tokens = chunk_windows(corpus.train)[:args.windows[0]].contiguous()
    hmm = HMM.random(HMMConfig(args.states[0], corpus.tokenizer.vocab_size, tokens.shape[1], homogeneous=True),
                     seed=0, dtype=torch.float64)
    return hmm, tokens


def run_hmmlvd(hmm, tokens, args) -> dict:
    from hmmlvd.em import apply_m_step

    model = hmm.to(dtype=torch.float32)
    start = time.perf_counter()
    counts = model.zero_counts()
    for begin in range(0, len(tokens), args.batch):
        model.accumulate_counts(tokens[begin:begin + args.batch], counts)
    e_step_counts = {name: value.clone() for name, value in counts.items()}
    model.set_parameters(apply_m_step(model.parameter_groups(), counts, pseudocount=0.0, step_size=1.0))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ll_before": hmm.log_likelihood(tokens).sum().item(),
            "ll_after": model.to(dtype=torch.float64).log_likelihood(tokens).sum().item(),
            "transition_counts": e_step_counts["transitions"][0].double().sum().item(),
            "transition_counts_matrix": e_step_counts["transitions"][0].double().numpy().ravel()[:2000].tolist()}


def run_hmmlearn(hmm, tokens, args) -> dict:
    from hmmlearn.hmm import CategoricalHMM

    model = CategoricalHMM(n_components=hmm.num_states, n_features=hmm.vocab_size, n_iter=1, tol=-np.inf,
                           init_params="", params="ste", implementation="scaling")
    model.startprob_ = hmm.initial.numpy()
    model.transmat_ = hmm.transitions[0].numpy()
    model.emissionprob_ = hmm.emissions[0].T.numpy().copy()
    observations = tokens.reshape(-1, 1).numpy()
    lengths = [tokens.shape[1]] * len(tokens)
    start = time.perf_counter()
    model.fit(observations, lengths)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ll_before": float(model.monitor_.history[0]),
            "ll_after": float(model.score(observations, lengths))}


def run_pomegranate(hmm, tokens, args) -> dict:
    from pomegranate.distributions import Categorical
    from pomegranate.hmm import DenseHMM

    def build():
        single = hmm.to(dtype=torch.float32)      # pomegranate computes in float32
        states = [Categorical(probs=single.emissions[0][:, i].unsqueeze(0).clone()) for i in range(hmm.num_states)]
        return DenseHMM(states, edges=single.transitions[0].clone(), starts=single.initial.clone(),
                        ends=torch.ones(hmm.num_states), max_iter=1, verbose=False)

    observations = tokens.unsqueeze(-1)
    model = build()
    start = time.perf_counter()
    ll_before = model.summarize(observations).sum().item()   # what fit() does per iteration
    transition_counts = model._xw_sum.double().clone()
    model.from_summaries()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ll_before": ll_before, "transition_counts": transition_counts.sum().item(),
            "transition_counts_matrix": transition_counts.numpy().ravel()[:2000].tolist()}


RUNNERS = {"hmmlvd": run_hmmlvd, "hmmlearn": run_hmmlearn, "pomegranate": run_pomegranate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="WikiText-2 folder (default: $HMMLVD_DATA)")
    parser.add_argument("--states", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--windows", type=int, nargs="+", default=[2048, 256],
                        help="32-token training windows, one value per --states entry (pomegranate holds "
                             "[windows, 31, h, h] floats at once, so large h needs fewer windows)")
    parser.add_argument("--batch", type=int, default=2048, help="windows per hmmlvd forward-backward batch")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds after which a library's iteration is stopped and reported as inf")
    parser.add_argument("--single", choices=list(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        hmm, tokens = _setup(args)
        RUNNERS[args.single](hmm, tokens[:2], args)      # warm-up: one-time library and thread-pool start
        with PeakMemory() as memory:
            row = RUNNERS[args.single](hmm, tokens, args)
        row["extra_rss_gib"] = memory.extra_gib
        print(json.dumps(row))
        return
    if len(args.windows) != len(args.states):
        parser.error("give one --windows value per --states value")
    print(f"V=33,278, one EM iteration from identical parameters, torch threads={torch.get_num_threads()}")
    for num_states, num_windows in zip(args.states, args.windows):
        rows = {}
        for name in RUNNERS:
            command = [sys.executable, __file__, "--single", name, "--states", str(num_states), "--windows",
                       str(num_windows), "--batch", str(args.batch)]
            if args.data_dir:
                command += ["--data-dir", args.data_dir]
            try:
                result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=args.timeout)
                rows[name] = json.loads(result.stdout)
            except subprocess.TimeoutExpired:
                rows[name] = {"seconds": float("inf"), "extra_rss_gib": float("nan"), "ll_before": float("nan")}
        ours = rows["hmmlvd"]
        print(f"\nh={num_states}, {num_windows} windows x 32 tokens of WikiText-2 train")
        print(f"{'library':<12} {'s/iteration':>12} {'extra RSS GiB':>14} {'LL before':>14} {'LL after':>14}")
        for name, row in rows.items():
            seconds = f"{row['seconds']:.3f}" if np.isfinite(row["seconds"]) else f"> {args.timeout:.0f} (stopped)"
            print(f"{name:<12} {seconds:>12} {row['extra_rss_gib']:>14.3f} {row['ll_before']:>14.2f} "
                  f"{row.get('ll_after', float('nan')):>14.2f}")
        learn, pome = rows["hmmlearn"], rows["pomegranate"]
        if not np.isfinite(pome["seconds"]):
            pome["transition_counts_matrix"] = [np.nan]
        counts_diff = np.max(np.abs(np.array(ours["transition_counts_matrix"]) -
                                    np.array(pome["transition_counts_matrix"]))) / max(np.max(np.abs(
                                        ours["transition_counts_matrix"])), 1e-30)
        pome_ratio = (f"{pome['seconds'] / ours['seconds']:.1f}x" if np.isfinite(pome["seconds"])
                      else f"> {args.timeout / ours['seconds']:.0f}x")
        print(f"speed-up vs hmmlearn {learn['seconds'] / ours['seconds']:.1f}x, vs pomegranate {pome_ratio}")
        print(f"relative LL difference after one step vs hmmlearn: "
              f"{abs(learn['ll_after'] - ours['ll_after']) / abs(ours['ll_after']):.2e}; "
              f"E-step LL vs pomegranate: {abs(pome['ll_before'] - ours['ll_before']) / abs(ours['ll_before']):.2e}; "
              f"max relative transition-count difference vs pomegranate: {counts_diff:.2e}")


if __name__ == "__main__":
    main()
