"""DEBD density estimation with HCLT trained by ``pc.train_hclt`` (regularisation chosen on the validation split).

    flock /tmp/hmmlvd-cpu.lock python bench/pc_debd.py --threads 2

Prints two tables. (1) Full training splits: test LL of the auto-tuned recipe next to the published HCLT
figure of the DEBD README, with the chosen setting. (2) Small data: each training split subsampled to
``--small-size`` rows (``torch.randperm`` with ``--small-seed``), on the full test split: the fixed recipe
that bench/RESULTS.md tuned on the full splits (pseudocount 0.01, 60 mini-batch epochs η 0.5→0.02 then 5
full-batch epochs, no use of the validation split), the same recipe with early stopping on valid (the first
grid point alone), and the auto-tuned recipe (the whole grid).
"""
from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

import torch

from hmmlvd import em, pc
from hmmlvd.data.debd import debd_dir, load_debd

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


def run_fixed(train: torch.Tensor, data: dict, recipe: pc.HCLTRecipe) -> dict:
    """The fixed recipe with every epoch run and no look at the validation split."""
    start = time.perf_counter()
    circuit = pc.Circuit(pc.structures.hclt(train, recipe.num_latents, seed=recipe.seed), seed=recipe.seed,
                         device=recipe.device)
    options = dict(pseudocount=recipe.grid[0].pseudocount, seed=recipe.seed, progress=False)
    em.fit(circuit, train, em.LinearAnneal(recipe.step_start, recipe.step_end, recipe.minibatch_epochs),
           batch_size=recipe.batch_size, **options)
    em.fit(circuit, train, em.Constant(1.0, recipe.fullbatch_epochs), batch_size=512, full_batch=True, **options)
    return {"test": em.mean_log_likelihood(circuit, data["test"], 4096, circuit.device),
            "seconds": time.perf_counter() - start}


def run(train: torch.Tensor, data: dict, recipe: pc.HCLTRecipe, progress: bool) -> dict:
    start = time.perf_counter()
    result = pc.train_hclt(train, data["valid"], recipe, progress=progress)
    seconds = time.perf_counter() - start
    test = em.mean_log_likelihood(result.circuit, data["test"], 4096, result.circuit.device)
    chosen = result.chosen
    return {"test": test, "seconds": seconds, "epoch": result.best_epoch, "tried": len(result.trials),
            "chosen": f"{chosen.pseudocount:g}/{chosen.softening:g}/{chosen.entropy_weight:g}",
            "valids": " ".join(f"{trial.best_valid:.3f}" for trial in result.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--root", default=None, help="DEBD folder (default $HMMLVD_DEBD)")
    parser.add_argument("--num-latents", type=int, default=32)
    parser.add_argument("--small-size", type=int, default=1500, help="training rows of the small-data table")
    parser.add_argument("--small-seed", type=int, default=0)
    parser.add_argument("--tables", nargs="+", default=["full", "small"], choices=["full", "small"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = published_figures(debd_dir(args.root) / "README.md")
    recipe = pc.HCLTRecipe(num_latents=args.num_latents, device=args.device)
    fixed = replace(recipe, grid=(pc.Regularization(0.01),))
    print(f"HCLT k={args.num_latents}; grid (pseudocount/softening/entropy) "
          f"{[f'{g.pseudocount:g}/{g.softening:g}/{g.entropy_weight:g}' for g in recipe.grid]}; "
          f"{recipe.minibatch_epochs} mini-batch + {recipe.fullbatch_epochs} full-batch epochs, patience "
          f"{recipe.patience}; {args.threads} thread(s)")
    datasets = {name: load_debd(name, args.root) for name in args.datasets}
    if "full" in args.tables:
        print("\nfull training splits, auto-tuned")
        print(f"{'dataset':<9} {'test LL':>8} {'HCLT pub':>8} {'diff':>7} {'chosen':>14} {'tried':>5} "
              f"{'best epoch':>14} {'s':>6}  valid per setting tried")
        for name, data in datasets.items():
            r = run(data["train"], data, recipe, args.progress)
            pub = reference.get(name, {}).get("hclt")
            print(f"{name:<9} {r['test']:8.3f} {_fmt(pub, 8, 2)} {_fmt(pub and r['test'] - pub, 7, 3)} "
                  f"{r['chosen']:>14} {r['tried']:5d} {r['epoch']:>14} {r['seconds']:6.1f}  {r['valids']}", flush=True)
    if "small" in args.tables:
        print(f"\n{args.small_size} training rows (torch.randperm, seed {args.small_seed}), full test split")
        print(f"{'dataset':<9} {'fixed':>8} {'+ stop':>8} {'auto':>8} {'gain':>6} {'HCLT pub':>8} {'chosen':>14} "
              f"{'fixed s':>7} {'auto s':>7}  valid per setting tried")
        for name, data in datasets.items():
            generator = torch.Generator().manual_seed(args.small_seed)
            small = data["train"][torch.randperm(len(data["train"]), generator=generator)[:args.small_size]]
            base, stopped = run_fixed(small, data, recipe), run(small, data, fixed, args.progress)
            auto = run(small, data, recipe, args.progress)
            print(f"{name:<9} {base['test']:8.3f} {stopped['test']:8.3f} {auto['test']:8.3f} "
                  f"{auto['test'] - base['test']:+6.3f} {_fmt(reference.get(name, {}).get('hclt'), 8, 2)} "
                  f"{auto['chosen']:>14} {base['seconds']:7.1f} {auto['seconds']:7.1f}  {auto['valids']}", flush=True)


def _fmt(value, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


if __name__ == "__main__":
    main()
