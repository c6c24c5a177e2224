"""LVD vs random init on WikiText-2 over a list of h: a CSV, a PNG (test perplexity against
parameter count, the paper's Figure 1 right) and a markdown table of perplexities and stage costs.

Every h runs ``hmmlvd train --init lvd`` into OUT/h<H>/lvd, then ``--init random`` into
OUT/h<H>/random (what ``--compare-random`` does; resumable with --resume); with --drop-weights
each run's weights (final and init) are deleted once it is done, so a large sweep needs the disk of
one model and its init only. Options after ``--`` go to ``hmmlvd train`` unchanged, e.g.

    python scripts/wikitext2_sweep.py --num-states 128 256 --out runs/sweep \\
        --data-dir ../shared/data/wikitext-2 -- --preset cpu
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from hmmlvd import HMMConfig
from hmmlvd.cli import train as train_command
from hmmlvd.hmm.model import FORMAT_VERSION, HMM_FOLDER_TYPES
from hmmlvd.io import atomic_write_png, read_config

FIELDS = ["num_states", "init", "num_parameters", "stage", "protocol", "split", "perplexity", "num_tokens"]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-states", type=int, nargs="+", default=[128, 256], help="values of h")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data-dir", help="WikiText-2 folder (default $HMMLVD_DATA)")
    parser.add_argument("--resume", action="store_true", help="resume each h from OUT/h<H>")
    parser.add_argument("--report-only", action="store_true", help="only collect finished runs into CSV/PNG")
    parser.add_argument("--drop-weights", action="store_true",
                        help="delete each run's model.safetensors files when it is done (the report needs "
                             "config.json and results.json only)")
    if "--" in argv:
        split = argv.index("--")
        return parser.parse_args(argv[:split]), argv[split + 1:]
    return parser.parse_args(argv), []


def train(num_states: int, args, extra: list[str]) -> None:
    for init in ("lvd", "random"):
        out = args.out / f"h{num_states}" / init
        argv = ["train", "--init", init, "--num-states", str(num_states), "--out", str(out)]
        argv += (["--data-dir", args.data_dir] if args.data_dir else []) + (["--resume"] if args.resume else [])
        parser = argparse.ArgumentParser(prog="hmmlvd")
        train_command.add_parser(parser.add_subparsers(dest="command"))
        train_command.run(parser.parse_args(argv + extra))
        if args.drop_weights:
            for weights in out.rglob("model.safetensors"):
                weights.unlink()


def num_parameters(folder: Path) -> int:
    """The parameter count of the model saved in ``folder``, from its config.json alone (so a finished
    run's weights may be deleted: at h = 4096 they are 17 GB per model)."""
    config = HMMConfig.from_dict(read_config(folder, HMM_FOLDER_TYPES, FORMAT_VERSION))
    return sum(math.prod(shape) for shape in config.parameter_shapes().values())


def collect(out: Path, states: list[int]) -> tuple[list[dict], list[dict]]:
    rows, costs = [], []
    for num_states in states:
        for init in ("lvd", "random"):
            folder = out / f"h{num_states}" / init
            if not (folder / "results.json").is_file():
                print(f"no results in {folder}; skipped", file=sys.stderr)
                continue
            report = json.loads((folder / "results.json").read_text())
            parameters = num_parameters(folder)
            rows += [{**{k: r[k] for k in ("stage", "protocol", "split", "perplexity", "num_tokens")},
                      "num_states": num_states, "init": init, "num_parameters": parameters}
                     for r in report["perplexity"]]
            epochs = report["em_epoch_seconds"]
            costs.append({"num_states": num_states, "init": init, **(report["lvd_stats"] or {}),
                          "em_windows": report["em_windows"],
                          "em_seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None,
                          "valid_ll_per_window": report["history"]["valid_log_likelihood"]})
    return rows, costs


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, protocol in zip(axes, ("sliding", "chunk")):
        for init, marker in (("lvd", "o"), ("random", "s")):
            points = sorted((r["num_parameters"], r["perplexity"]) for r in rows if r["init"] == init
                            and r["stage"] == "final" and r["protocol"] == protocol and r["split"] == "test")
            if points:
                axis.plot(*zip(*points), marker=marker, label="LVD init" if init == "lvd" else "random init")
        axis.set(xscale="log", xlabel="number of parameters (h)", ylabel=f"test perplexity ({protocol})",
                 title=f"WikiText-2, {protocol} protocol")
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        sizes = sorted({(r["num_parameters"], r["num_states"]) for r in rows})
        axis.set_xticks([n for n, _ in sizes], [f"{n / 1e6:.0f}M\n(h={h})" for n, h in sizes])
        axis.legend()
    figure.tight_layout()
    atomic_write_png(path, figure)


def markdown(rows: list[dict], costs: list[dict]) -> str:
    lines = ["| h | init | stage | protocol | split | perplexity |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['num_states']} | {r['init']} | {r['stage']} | {r['protocol']} | {r['split']} | "
              f"{r['perplexity']:.2f} |" for r in rows]
    lines += ["", "| h | stage | protocol | split | LVD | random | random / LVD |", "|---|---|---|---|---|---|---|"]
    lookup = {(r["num_states"], r["init"], r["stage"], r["protocol"], r["split"]): r["perplexity"] for r in rows}
    for (h, init, stage, protocol, split), value in lookup.items():
        other = lookup.get((h, "random", stage, protocol, split))
        if init == "lvd" and other is not None:
            lines.append(f"| {h} | {stage} | {protocol} | {split} | {value:.2f} | {other:.2f} | {other / value:.3f} |")
    lines += ["", "| h | init | LVD windows | suffixes/s | K-means s | counting s | EM windows | EM s/epoch |",
              "|---|---|---|---|---|---|---|---|"]
    for c in costs:
        if "num_windows" in c:
            rate = c["suffixes_per_second"]
            lvd = (f"{c['num_windows']} | {f'{rate:.0f}' if rate else 'cached'} | {c['kmeans_seconds']:.1f} | "
                   f"{c['counting_seconds']:.2f}")
        else:
            lvd = "- | - | - | -"
        lines.append(f"| {c['num_states']} | {c['init']} | {lvd} | {c['em_windows']} | "
                     f"{c['em_seconds_per_epoch'] or 0:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        for num_states in args.num_states:
            train(num_states, args, extra)
    rows, costs = collect(args.out, args.num_states)
    if not rows:
        raise SystemExit("no finished runs to report")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "sweep.png")
    (args.out / "sweep.md").write_text(markdown(rows, costs))
    print(markdown(rows, costs))
    print(f"wrote {args.out / 'sweep.csv'}, {args.out / 'sweep.png'}, {args.out / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
