"""DEBD density estimation with HCLT trained by ``pc.train_hclt`` (hidden size and regularisation chosen on valid).

    HMMLVD_DEBD=../shared/data/debd flock /tmp/hmmlvd-cpu.lock python bench/pc_debd.py --threads 1 \\
        --out bench/results/pc_debd.json

Prints two tables and, with ``--out``, writes every trial (hidden size, setting, valid LL, seconds) as JSON.
(1) Full training splits: test LL next to the published HCLT figure of the DEBD README, with the chosen hidden size
and setting. (2) Small data: each training split subsampled to ``--small-size`` rows (``torch.randperm`` with
``--small-seed``), on the full test split. ``--preset fixed`` is the recipe tuned on the full splits (k = 32,
pseudocount 0.01, one trial); the default ``search`` preset chooses on valid.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from hmmlvd import em, pc
from hmmlvd.data.debd import debd_dir, load_debd
from hmmlvd.pc.recipe import PRESETS

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


def run(train: torch.Tensor, data: dict, recipe: pc.HCLTRecipe, progress: bool) -> dict:
    """Train with ``recipe``; the test LL of the returned circuit, the choice and every trial."""
    start = time.perf_counter()
    result = pc.train_hclt(train, data["valid"], recipe, progress=progress)
    seconds = time.perf_counter() - start
    test = em.mean_log_likelihood(result.circuit, data["test"], 4096, result.circuit.device)
    return {"test": test, "seconds": seconds, "num_latents": result.num_latents, "chosen": _setting(result.chosen),
            "best_valid": result.best_valid, "best_epoch": result.best_epoch, "time_budget": result.time_budget,
            "trials": [{"num_latents": t.num_latents, "setting": _setting(t.setting), "best_valid": t.best_valid,
                        "best_epoch": t.best_epoch, "seconds": t.seconds, "num_parameters": t.num_parameters}
                       for t in result.trials],
            "skipped": [{"num_latents": k, "setting": _setting(setting)} for k, setting in result.skipped]}


def _setting(setting: pc.Regularization) -> str:
    return f"{setting.pseudocount:g}/{setting.softening:g}/{setting.entropy_weight:g}"


def _trials(row: dict) -> str:
    return " ".join(f"k{t['num_latents']}@{t['setting']}:{t['best_valid']:.3f}({t['seconds']:.0f}s)"
                    for t in row["trials"]) + "".join(f" skipped k{s['num_latents']}@{s['setting']}"
                                                      for s in row["skipped"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--root", default=None, help="DEBD folder (default $HMMLVD_DEBD)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="search")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per dataset (default: the preset's)")
    parser.add_argument("--small-size", type=int, default=1500, help="training rows of the small-data table")
    parser.add_argument("--small-seed", type=int, default=0)
    parser.add_argument("--tables", nargs="+", default=["full", "small"], choices=["full", "small"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared 2-core CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON file for every row and trial")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference = published_figures(debd_dir(args.root) / "README.md")
    recipe = replace(PRESETS[args.preset], device=args.device)
    if args.time_budget is not None:
        recipe = replace(recipe, time_budget=args.time_budget)
    print(f"HCLT preset {args.preset}: hidden sizes {recipe.hidden_sizes}; grid (pseudocount/softening/entropy) "
          f"{[_setting(g) for g in recipe.grid]}; {recipe.minibatch_epochs} mini-batch + {recipe.fullbatch_epochs} "
          f"full-batch epochs, patience {recipe.patience}; time budget {recipe.time_budget} s; {args.threads} thread(s)")
    rows = {"recipe": asdict(recipe), "preset": args.preset, "threads": args.threads, "full": {}, "small": {}}
    for table in args.tables:
        print("\nfull training splits" if table == "full" else
              f"\n{args.small_size} training rows (torch.randperm, seed {args.small_seed}), full test split")
        print(f"{'dataset':<9} {'test LL':>8} {'HCLT pub':>8} {'diff':>7} {'k':>3} {'chosen':>14} {'best epoch':>14} "
              f"{'s':>6}  trials: k@setting:valid(seconds)")
        for name in args.datasets:
            data = load_debd(name, args.root)
            train = data["train"]
            if table == "small":
                generator = torch.Generator().manual_seed(args.small_seed)
                train = train[torch.randperm(len(train), generator=generator)[:args.small_size]]
            row = rows[table][name] = run(train, data, recipe, args.progress)
            pub = reference.get(name, {}).get("hclt")
            print(f"{name:<9} {row['test']:8.3f} {_fmt(pub, 8, 2)} {_fmt(pub and row['test'] - pub, 7, 3)} "
                  f"{row['num_latents']:3d} {row['chosen']:>14} {row['best_epoch']:>14} {row['seconds']:6.1f}  "
                  f"{_trials(row)}", flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(rows, indent=1))


def _fmt(value, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{decimals}f}"


if __name__ == "__main__":
    main()
