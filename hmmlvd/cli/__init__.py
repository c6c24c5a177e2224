"""The ``hmmlvd`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("train", "distill-lm", "eval", "score", "generate", "info", "image")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmmlvd", description="Tractable HMM language models and image "
                                     "patch circuits trained by latent variable distillation.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hmmlvd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"hmmlvd {args.command}: error: {error}", file=sys.stderr)
        return 2
