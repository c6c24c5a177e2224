"""``hmmlvd score``: log-probabilities and perplexity of texts under a saved language model."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score", help="score texts with a saved language model (log-probabilities, perplexity)",
        description="Print each text's total log-probability (natural log), token count and perplexity, "
                    "then the totals. Texts longer than the HMM window are scored with the sliding protocol.")
    parser.add_argument("model", type=Path, help="folder written by LanguageModel.save_pretrained")
    parser.add_argument("texts", nargs="*", help="texts to score (or use --file)")
    parser.add_argument("--file", type=Path, help="score every non-empty line of this file ('-' for stdin)")
    parser.add_argument("--per-token", action="store_true", help="also print every token's log-probability")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per forward pass (default 256)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.set_defaults(run=run)
    return parser


def _read_texts(args) -> list[str]:
    texts = list(args.texts)
    if args.file is not None:
        if str(args.file) == "-":
            lines = sys.stdin.read().splitlines()
        elif args.file.is_file():
            lines = args.file.read_text().splitlines()
        else:
            raise ValueError(f"{args.file} does not exist")
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise ValueError("nothing to score: give texts as arguments or --file PATH")
    return texts


def run(args) -> int:
    from ..lm import LanguageModel

    texts = _read_texts(args)
    lm = LanguageModel.from_pretrained(args.model, device=args.device)
    scores = lm.score(texts, batch_size=args.batch_size, progress=True)
    protocol = "full sequence" if lm.window is None else f"sliding, window {lm.window}"
    print("log_prob\ttokens\tperplexity\ttext")
    for score in scores:
        perplexity = math.exp(-score.total_log_prob / score.num_tokens) if score.num_tokens else float("nan")
        print(f"{score.total_log_prob:.4f}\t{score.num_tokens}\t{perplexity:.3f}\t{score.text}")
        if args.per_token:
            for token, value in zip(score.token_ids, score.token_log_probs):
                print(f"\t{value:.4f}\t{token}\t{lm.decode([token])}")
    total = math.fsum(s.total_log_prob for s in scores)
    count = sum(s.num_tokens for s in scores)
    overall = math.exp(-total / count) if count else float("nan")
    print(f"total\tlog_prob={total:.4f}\ttokens={count}\tperplexity={overall:.3f}\t({protocol})")
    return 0
