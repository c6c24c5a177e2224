"""Homogeneous HMM EM: hmmlvd next to hmmlearn's CategoricalHMM and pomegranate's DenseHMM.

All three start from the same parameters on the same WikiText-2 training windows and run
one EM iteration. The script reports seconds per iteration, the peak extra resident memory
of the iteration (each library in its own process) and the agreement of the results:
hmmlearn's updated model must give the same log-likelihood as ours (1e-4 relative);
pomegranate models an end-state distribution, so after an update its model differs by
construction: we compare its E-step instead (log-likelihood and expected transition counts).

    python bench/hmm_vs_peers.py --data-dir ../shared/data/wikitext-2 --states 64 256 --windows 256
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _setup(args):
    from hmmlvd import HMM, HMMConfig
    from hmmlvd.data import chunk_windows, wikitext2

    corpus = wikitext2(args.data_dir)
    tokens = chunk_windows(corpus.train)[:args.windows].contiguous()
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
    probe = build()
    ll_before = probe.log_probability(observations).sum().item()
    probe.summarize(observations)
    transition_counts = probe._xw_sum.double()
    model = build()
    start = time.perf_counter()
    model.fit(observations)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ll_before": ll_before, "transition_counts": transition_counts.sum().item(),
            "transition_counts_matrix": transition_counts.numpy().ravel()[:2000].tolist()}


RUNNERS = {"hmmlvd": run_hmmlvd, "hmmlearn": run_hmmlearn, "pomegranate": run_pomegranate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="WikiText-2 folder (default: $HMMLVD_DATA)")
    parser.add_argument("--states", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--windows", type=int, default=256, help="number of 32-token training windows")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--single", choices=list(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        hmm, tokens = _setup(args)
        RUNNERS[args.single](hmm, tokens[:2], args)      # warm-up: one-time library and thread-pool start
        baseline = _rss_gib()
        row = RUNNERS[args.single](hmm, tokens, args)
        row["extra_rss_gib"] = _rss_gib() - baseline
        print(json.dumps(row))
        return
    print(f"{args.windows} windows x 32 tokens, V=33,278, one EM iteration from identical parameters, "
          f"torch threads={torch.get_num_threads()}")
    for num_states in args.states:
        rows = {}
        for name in RUNNERS:
            command = [sys.executable, __file__, "--single", name, "--states", str(num_states), "--windows",
                       str(args.windows), "--batch", str(args.batch)]
            if args.data_dir:
                command += ["--data-dir", args.data_dir]
            rows[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        ours = rows["hmmlvd"]
        print(f"\nh={num_states}")
        print(f"{'library':<12} {'s/iteration':>12} {'extra RSS GiB':>14} {'LL before':>14} {'LL after':>14}")
        for name, row in rows.items():
            print(f"{name:<12} {row['seconds']:>12.3f} {row['extra_rss_gib']:>14.3f} {row['ll_before']:>14.2f} "
                  f"{row.get('ll_after', float('nan')):>14.2f}")
        learn, pome = rows["hmmlearn"], rows["pomegranate"]
        counts_diff = np.max(np.abs(np.array(ours["transition_counts_matrix"]) -
                                    np.array(pome["transition_counts_matrix"]))) / max(np.max(np.abs(
                                        ours["transition_counts_matrix"])), 1e-30)
        print(f"speed-up vs hmmlearn {learn['seconds'] / ours['seconds']:.1f}x, vs pomegranate "
              f"{pome['seconds'] / ours['seconds']:.1f}x")
        print(f"relative LL difference after one step vs hmmlearn: "
              f"{abs(learn['ll_after'] - ours['ll_after']) / abs(ours['ll_after']):.2e}; "
              f"E-step LL vs pomegranate: {abs(pome['ll_before'] - ours['ll_before']) / abs(ours['ll_before']):.2e}; "
              f"max relative transition-count difference vs pomegranate: {counts_diff:.2e}")


if __name__ == "__main__":
    main()
