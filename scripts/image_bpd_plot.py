"""Test bits per dimension against parameters, one curve per model and patch-circuit family (the analogue of the
paper's Figure 1 left).

    python scripts/image_bpd_plot.py bench/results/image_lvd.json --out bench/results/image_lvd.png
    python scripts/image_bpd_plot.py bench/results/image_lvd_full.json bench/results/image_lvd_h4.json \
        --out bench/results/both.png
    python scripts/image_bpd_plot.py bench/results/image_lvd_h16_long_2026-12-05.json --margins \
        --title "tied, H = 16: LVD 3+1+4 epochs against 5 of EM alone" --out bench/results/image_lvd_h16_long.png

Several JSON files of ``bench/image_lvd.py``, or ``results.json`` files of ``hmmlvd image train``, are drawn together
when they measured the same dataset and number of training images. A family is the patch circuits of one hidden
size H, tying and M-step pseudocount (files that do not record it used the default, 0.1): LVD and EM alone get one
curve per family, the pixel HCLTs one curve per tying (untied, or sized like the tied circuits). ``--margins`` adds a
panel with LVD's lead over EM alone (EM alone's test bpd minus LVD's) at every size where a family has both.
"""
from __future__ import annotations

import argparse
import json

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hmmlvd.io import atomic_write_png  # noqa: E402

STYLES = {"lvd": ("LVD", "-", "C0"), "em": ("same structure, EM alone", "--", "C1"), "hclt": ("pixel HCLT", ":", "C2")}
FAMILY_MARKERS = "osDv^<>p"
DEFAULT_PSEUDOCOUNT = 0.1              # what every file measured before the bench and the recipe recorded it


def recipe_rows(results: dict) -> list[dict]:
    """The rows of a ``hmmlvd image train`` results file, in the bench's form (one per model)."""
    config = results["config"]
    return [{**model, "tied": config["tied"], "hidden_size": config["hidden_size"],
             "pseudocount": config.get("pseudocount", DEFAULT_PSEUDOCOUNT)} for model in results["models"]]


def load_rows(paths: list[str]) -> tuple[str, int, list[dict]]:
    """The rows of every results file, and their common dataset and number of training images (files written
    before the bench recorded its dataset measured Fashion-MNIST)."""
    rows, measured = [], set()
    for path in paths:
        with open(path) as handle:
            results = json.load(handle)
        measured.add((results.get("dataset", "fashion-mnist"), results["train_images"]))
        if "rows" in results:
            rows += [{"pseudocount": results.get("pseudocount", DEFAULT_PSEUDOCOUNT), **row} for row in results["rows"]]
        else:
            rows += recipe_rows(results)
    if len(measured) != 1:
        raise SystemExit(f"the files measured different datasets or numbers of training images ({sorted(measured)}); "
                         "plot them separately")
    dataset, train_images = measured.pop()
    return dataset, train_images, rows


def family(row: dict) -> tuple[bool, int, float]:
    """(tied, H, pseudocount) of a patch circuit's row."""
    return bool(row["tied"]), row["hidden_size"], row.get("pseudocount", DEFAULT_PSEUDOCOUNT)


def family_label(key: tuple[bool, int, float], rows: list[dict]) -> str:
    """``tied, H = 16`` (with the pseudocount when the rows' families differ in it)."""
    tied, hidden, pseudocount = key
    several = len({family(row)[2] for row in rows if row["model"] != "hclt"}) > 1
    return f"{'tied' if tied else 'untied'}, H = {hidden}" + (f", pseudocount {pseudocount:g}" if several else "")


def curves(rows: list[dict]) -> list[tuple[tuple, str, list[dict]]]:
    """((model, family or None), label, rows sorted by parameters) per model and family (:func:`family`; the
    pixel HCLTs per tying), one point per parameter count (the first row given of that size)."""
    groups = {}
    for row in rows:
        tied = bool(row["tied"])
        if row["model"] == "hclt":
            key = ("hclt", (tied,))
            label = "pixel HCLT" + (", sized like the tied circuits" if tied else "")
        else:
            key = (row["model"], family(row))
            label = f"{STYLES[row['model']][0]}, {family_label(family(row), rows)}"
        groups.setdefault(key, (label, {}))[1].setdefault(row["num_parameters"], row)
    ordered = sorted(groups.items(), key=lambda item: (list(STYLES).index(item[0][0]), item[0][1]))
    return [(key, label, sorted(points.values(), key=lambda r: r["num_parameters"]))
            for key, (label, points) in ordered]


def margins(rows: list[dict]) -> dict[tuple[bool, int, float], list[tuple[int, float]]]:
    """family -> [(parameters, EM alone's test bpd minus LVD's)] at every size where the family has both, in
    order of size (the first row given of each model and size, as :func:`curves`)."""
    bpd = {key: {row["num_parameters"]: row["test_bpd"] for row in points} for key, _, points in curves(rows)}
    found = {}
    for (model, key), lvd in bpd.items():
        em_alone = bpd.get(("em", key), {}) if model == "lvd" else {}
        points = [(size, em_alone[size] - value) for size, value in sorted(lvd.items()) if size in em_alone]
        if points:
            found[key] = points
    return found


def size_ticks(axis, sizes: list[int]) -> None:
    """Log-scaled x axis labelled with the patch circuits' sizes, leaving out one within 15 % of the last."""
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ticks = []
    for size in sorted(sizes):
        if not ticks or size > 1.15 * ticks[-1]:
            ticks.append(size)
    axis.set_xticks(ticks, [f"{size / 1e6:.2g}M" for size in ticks], fontsize=7)
    axis.set_xlabel("parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="JSON files written by bench/image_lvd.py or hmmlvd image train")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--ylim", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="bpd range shown (default: every point); points outside it are cut off")
    parser.add_argument("--margins", action="store_true",
                        help="add a panel with LVD's lead over EM alone against parameters, one line per family")
    parser.add_argument("--title", help="title (default: the dataset and its number of training images)")
    args = parser.parse_args()
    dataset, train_images, rows = load_rows(args.results)
    leads = margins(rows) if args.margins else {}
    if args.margins and not leads:
        raise SystemExit("--margins needs LVD and EM alone rows of the same family and size; none were found")
    if args.margins:
        figure, (axis, margin_axis) = plt.subplots(1, 2, figsize=(10.5, 4.3))
    else:
        figure, axis = plt.subplots(figsize=(6, 4.3))
    families = sorted({family(r) for r in rows if r["model"] != "hclt"})

    def family_marker(key: tuple) -> str:
        return FAMILY_MARKERS[families.index(key) % len(FAMILY_MARKERS)]

    for (model, key), label, points in curves(rows):
        marker = "^" if model == "hclt" else family_marker(key)
        axis.plot([r["num_parameters"] for r in points], [r["test_bpd"] for r in points], marker + STYLES[model][1],
                  color=STYLES[model][2], fillstyle="none" if key[0] else "full", label=label)
    size_ticks(axis, [r["num_parameters"] for r in rows if r["model"] != "hclt"])
    axis.set_ylabel("test bits per dimension")
    if args.ylim:
        axis.set_ylim(*args.ylim)
    axis.set_title(args.title or f"{dataset} ({train_images:,} training images)", fontsize=9)
    axis.legend(fontsize=7)
    if args.margins:
        for key, points in leads.items():
            margin_axis.plot(*zip(*points), family_marker(key) + "-", color=f"C{3 + families.index(key)}",
                             fillstyle="none" if key[0] else "full", label=family_label(key, rows))
        margin_axis.axhline(0, color="0.6", linewidth=0.8)
        size_ticks(margin_axis, [size for points in leads.values() for size, _ in points])
        margin_axis.set_ylabel("LVD's lead over EM alone (test bpd)")
        margin_axis.set_title("EM alone's test bpd minus LVD's", fontsize=9)
        margin_axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_write_png(args.out, figure, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
