"""``hmmlvd generate``: sample continuations from a saved language model, optionally constrained."""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="generate text with a saved language model, optionally under constraints",
        description="Sample continuations of a prefix. Constraints (--keywords, --banned, --min-length/"
                    "--max-length) are combined and satisfied exactly (HMM x DFA); then the prefix plus "
                    "--max-new-tokens must fit in the HMM window.")
    parser.add_argument("model", type=Path, help="folder written by LanguageModel.save_pretrained")
    parser.add_argument("--prefix", default="", help="text to continue (default: empty)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--num-samples", type=int, default=1, help="continuations to draw (default 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    parser.add_argument("--keywords", nargs="+", default=None, help="words/phrases that must all appear")
    parser.add_argument("--banned", nargs="+", default=None, help="words/phrases that must not appear")
    parser.add_argument("--min-length", type=int, default=None, help="least tokens before --end-word")
    parser.add_argument("--max-length", type=int, default=None, help="most tokens before --end-word")
    parser.add_argument("--end-word", default=None, help="token that ends the text for the length limits")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.set_defaults(run=run)
    return parser


def build_constraint(lm, args):
    """The intersection of the requested constraints, or None when there are none."""
    from ..constraints import intersect

    parts = []
    if args.keywords:
        parts.append(lm.keywords(args.keywords))
    if args.banned:
        parts.append(lm.banned(args.banned))
    if args.min_length is not None or args.max_length is not None or args.end_word is not None:
        low = 0 if args.min_length is None else args.min_length
        high = args.max_new_tokens if args.max_length is None else args.max_length
        parts.append(lm.length(low, high, args.end_word))
    return intersect(*parts) if parts else None


def run(args) -> int:
    from ..lm import LanguageModel

    lm = LanguageModel.from_pretrained(args.model, device=args.device)
    constraint = build_constraint(lm, args)
    texts = lm.generate(args.prefix, args.max_new_tokens, args.temperature, args.top_k, args.seed,
                        constraint=constraint, num_samples=args.num_samples)
    if constraint is not None:
        log_prob = float(lm.constraint_log_prob(args.prefix, constraint, args.max_new_tokens)[0])
        print(f"# p(constraint | prefix) = {math.exp(log_prob):.4g} (log {log_prob:.3f})")
    for text in texts:
        print(f"{args.prefix} {text}".strip() if args.prefix else text)
    return 0
