"""DEBD density estimation with HCLT: mini-batch EM then full-batch EM, compared with the published
HCLT and EinsumNetworks figures listed in the DEBD README.

    python bench/pc_debd.py --threads 2          # idle machine; the defaults are the recipe of bench/RESULTS.md

Prints per dataset the test log-likelihood (parameters of the best validation epoch), the wall
time of structure learning + training, and the published reference numbers side by side.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from hmmlvd import em, pc
from hmmlvd.data.debd import debd_dir, load_debd
from hmmlvd.pc.structures import hclt
from pc_common import add_em_arguments, describe_em, mini_then_full_batch_em

DATASETS = ("nltcs", "plants", "baudio", "jester", "bnetflix")


def published_figures(readme: Path) -> dict[str, dict]:
    """``{dataset: {"hclt": ll, "einet": ll or None, "einet_seconds": s or None}}`` from the README table."""
    figures = {}
    if not readme.is_file():
        return figures
    for line in readme.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in DATASETS:
            einet = re.match(r"(-?[\d.]+) \((\d+) epochs, (\d+) s\)", cells[2])
            figures[cells[0]] = {"hclt": float(cells[1]),
                                 "einet": float(einet.group(1)) if einet else None,
                                 "einet_seconds": float(einet.group(3)) if einet else None}
    return figures


def train(name: str, args) -> dict:
    data = load_debd(name, args.root)
    start = time.perf_counter()
    circuit = pc.Circuit(hclt(data["train"], args.num_latents, num_trees=args.num_trees, seed=args.seed),
                         seed=args.seed, device=args.device)
    best = {"valid": -float("inf"), "params": None, "epoch": None}

    def keep_best(phase: str):
        def callback(epoch: int, history: em.History) -> None:
            valid = history.valid_log_likelihood[-1]
            if valid > best["valid"]:
                best.update(valid=valid, epoch=f"{phase} {epoch + 1}",
                            params={k: g.values.clone() for k, g in circuit.parameter_groups().items()})
        return callback

    train = data["train"]
    if args.soften > 0:
        train = pc.soften(train, args.soften, marginals=pc.empirical_marginals(train))
    mini_then_full_batch_em(circuit, train, args, valid=data["valid"], on_epoch_end=keep_best, seed=args.seed)
    seconds = time.perf_counter() - start
    circuit.set_parameters(best["params"])
    test = em.mean_log_likelihood(circuit, data["test"], 4096, circuit.device)
    return {"test": test, "valid": best["valid"], "epoch": best["epoch"], "seconds": seconds,
            "parameters": circuit.num_parameters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--root", default=None, help="DEBD folder (default $HMMLVD_DEBD or /work/shared/data/debd)")
    parser.add_argument("--num-latents", type=int, default=32)
    parser.add_argument("--num-trees", type=int, default=1, help="mixture of HCLTs on bootstrap resamples")
    parser.add_argument("--soften", type=float, default=0.0,
                        help="data softening strength: EM on soft evidence that moves this much weight from each "
                             "observed value to the training marginal (0 = hard data)")
    add_em_arguments(parser, minibatch_epochs=60, fullbatch_epochs=5, step_end=0.02, pseudocount=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = published_figures(debd_dir(args.root) / "README.md")
    print(f"HCLT k={args.num_latents}, {args.num_trees} tree(s), softening {args.soften}: {describe_em(args)}")
    header = (f"{'dataset':<9} {'test LL':>8} {'HCLT pub':>8} {'diff':>6} {'EiNet':>7} {'ours s':>7} "
              f"{'EiNet s':>7} {'speedup':>7} {'best epoch':>15} {'params':>8}")
    print(header)
    results = {}
    for name in args.datasets:
        result = results[name] = train(name, args)
        ref = reference.get(name, {})
        hclt_ll, einet, einet_s = ref.get("hclt"), ref.get("einet"), ref.get("einet_seconds")
        print(f"{name:<9} {result['test']:8.3f} {_fmt(hclt_ll, 8, 2)} "
              f"{_fmt(None if hclt_ll is None else result['test'] - hclt_ll, 6, 3)} {_fmt(einet, 7, 2)} "
              f"{result['seconds']:7.1f} {_fmt(einet_s, 7, 0)} "
              f"{_fmt(None if einet_s is None else einet_s / result['seconds'], 6, 1)}x "
              f"{result['epoch']:>15} {result['parameters']:8d}", flush=True)
    matched = [n for n in results if n in reference]
    if matched:
        ours = sum(results[n]["test"] for n in matched) / len(matched)
        theirs = sum(reference[n]["hclt"] for n in matched) / len(matched)
        print(f"average over {matched}: ours {ours:.3f}, published HCLT {theirs:.3f}, diff {ours - theirs:+.3f}")


def _fmt(value, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


if __name__ == "__main__":
    main()
