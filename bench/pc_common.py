"""Shared pieces of the PC benchmarks: the EM command-line options and the two-stage EM recipe."""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from hmmlvd import em, pc


def add_em_arguments(parser: argparse.ArgumentParser, *, minibatch_epochs: int, fullbatch_epochs: int,
                     step_end: float = 0.05, pseudocount: float = 0.1) -> None:
    parser.add_argument("--minibatch-epochs", type=int, default=minibatch_epochs)
    parser.add_argument("--fullbatch-epochs", type=int, default=fullbatch_epochs)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--step-start", type=float, default=0.5, help="mini-batch η, annealed linearly ...")
    parser.add_argument("--step-end", type=float, default=step_end, help="... to this value")
    parser.add_argument("--pseudocount", type=float, default=pseudocount)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--device", default="cpu", help="torch device of the circuit (cpu, cuda)")
    parser.add_argument("--progress", action="store_true")


def describe_em(args) -> str:
    return (f"{args.minibatch_epochs} mini-batch epochs (batch {args.batch_size}, η {args.step_start}->"
            f"{args.step_end}) + {args.fullbatch_epochs} full-batch epochs, pseudocount {args.pseudocount}, "
            f"{args.threads} thread(s), device {args.device}")


def mini_then_full_batch_em(circuit: pc.Circuit, train: torch.Tensor, args, *, valid: torch.Tensor | None = None,
                            on_epoch_end: Callable[[str], Callable] | None = None, seed: int = 0) -> None:
    """Mini-batch EM with a linearly annealed step size, then full-batch EM (η = 1).

    ``on_epoch_end(phase)`` returns the per-epoch callback for that phase ("mini-batch" / "full-batch").
    """
    common = dict(pseudocount=args.pseudocount, valid=valid, progress=args.progress, seed=seed)
    em.fit(circuit, train, em.LinearAnneal(args.step_start, args.step_end, args.minibatch_epochs),
           batch_size=args.batch_size, on_epoch_end=on_epoch_end and on_epoch_end("mini-batch"), **common)
    em.fit(circuit, train, em.Constant(1.0, args.fullbatch_epochs), batch_size=512, full_batch=True,
           on_epoch_end=on_epoch_end and on_epoch_end("full-batch"), **common)
