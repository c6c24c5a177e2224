"""Test bits per dimension against parameters, one curve per model (the analogue of the paper's Figure 1 left).

    python scripts/image_bpd_plot.py bench/image_lvd.json --out bench/image_lvd.png
"""
from __future__ import annotations

import argparse
import json

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hmmlvd.io import atomic_write_png  # noqa: E402

STYLES = {"lvd": ("LVD", "o-", "C0"), "em": ("same structure, EM alone", "s--", "C1"), "hclt": ("pixel HCLT", "^:", "C2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="JSON written by bench/image_lvd.py")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    with open(args.results) as handle:
        results = json.load(handle)
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for model, (label, style, colour) in STYLES.items():
        for tied in (False, True):      # untied and tied patch circuits (and their HCLTs) are separate curves
            rows = sorted((r for r in results["rows"] if r["model"] == model and bool(r["tied"]) == tied),
                          key=lambda r: r["num_parameters"])
            if rows:
                suffix = ("" if not tied else ", sized like the tied circuits" if model == "hclt"
                          else ", tied circuits")
                axis.plot([r["num_parameters"] for r in rows], [r["test_bpd"] for r in rows], style, color=colour,
                          fillstyle="none" if tied else "full", label=label + suffix)
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    sizes = sorted({r["num_parameters"] for r in results["rows"] if r["model"] != "hclt"})
    axis.set_xticks(sizes, [f"{size / 1e6:.2g}M" for size in sizes])       # the patch circuits' sizes
    axis.set_xlabel("parameters")
    axis.set_ylabel("test bits per dimension")
    axis.set_title(f"Fashion-MNIST ({results['train_images']:,} training images)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_write_png(args.out, figure, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
