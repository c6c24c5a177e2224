"""``hmmlvd info MODEL_DIR``: describe a saved HMM."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a saved model folder",
                                   description="Print the configuration and size of a saved HMM.")
    parser.add_argument("model_dir", help="folder written by save_pretrained (config.json + model.safetensors)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..hmm import HMM

    hmm = HMM.from_pretrained(args.model_dir)
    print(hmm)
    print(f"parameters: {hmm.num_parameters():,}")
    return 0
