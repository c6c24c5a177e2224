"""Build the reproduction notebooks from their paired jupytext scripts and execute them.

    python scripts/execute_notebooks.py                       # every notebook, full scale, outputs kept
    python scripts/execute_notebooks.py 02 --scale smoke      # one notebook at smoke size

Each ``notebooks/NN_name.py`` (jupytext percent format) is the source. The ``.ipynb`` next to it is
rebuilt from it, executed with ``HMMLVD_NOTEBOOK_SCALE`` set, and saved atomically with its outputs and a
first cell that states the machine, the date, the scale and the wall time of the run. A notebook over
1 MiB is refused (figures go in as PNG; no huge tables).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import torch
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MAX_BYTES = 1 << 20
STAMP_TAG = "run-stamp"


def machine() -> str:
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores ({threads} torch threads), {device}, " \
           f"Python {platform.python_version()}, torch {torch.__version__}"


def execute(script: Path, scale: str, timeout: int) -> Path:
    notebook = jupytext.read(script)
    os.environ["HMMLVD_NOTEBOOK_SCALE"] = scale
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    wall = time.perf_counter() - start
    stamp = nbformat.v4.new_markdown_cell(
        f"*Executed at scale `{scale}` on {datetime.date.today().isoformat()}: {machine()}; "
        f"wall time {wall / 60:.1f} min. Rebuild with `python scripts/execute_notebooks.py {script.stem[:2]}`.*")
    stamp.metadata["tags"] = [STAMP_TAG]
    notebook.cells.insert(0, stamp)
    target = script.with_suffix(".ipynb")
    text = nbformat.writes(notebook)
    if len(text.encode()) > MAX_BYTES:
        raise SystemExit(f"{target.name} would be {len(text.encode()) / 2**20:.2f} MiB (> 1 MiB); shrink its outputs")
    temporary = target.with_suffix(".ipynb.tmp")
    temporary.write_text(text)
    os.replace(temporary, target)
    print(f"{target.name}: {wall:.0f} s at scale {scale}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="notebook number prefixes (default: all)")
    parser.add_argument("--scale", choices=("smoke", "full"), default="full")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    scripts = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")
                     if not args.only or any(p.name.startswith(prefix) for prefix in args.only))
    if not scripts:
        parser.error(f"no notebook script matches {args.only} in {NOTEBOOKS}")
    for script in scripts:
        execute(script, args.scale, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
