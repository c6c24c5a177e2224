"""``hmmlvd generate``: continuations from a saved language model, or from a causal LM steered by it, under
constraints that hold exactly."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..steer import DECODINGS

DTYPES = ("float32", "float64", "bfloat16")
CONCEPTS_HELP = ("comma-separated concepts; a concept is a word or phrase, or inflections joined by | (any one "
                 "counts), e.g. --keywords 'run|runs|ran,river bank'")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="generate text with a saved language model, or steer a causal LM with it, under constraints",
        description="Sample continuations of a prompt. Constraints (--keywords, --any-keywords, --banned, lengths) "
                    "are combined and satisfied exactly (HMM x DFA); the prompt's last tokens plus "
                    "--max-new-tokens must fit in the HMM window. With --base-lm the HMM steers that "
                    "transformers causal LM (which must share the HMM's tokenizer: hmmlvd distill-lm makes such "
                    "an HMM) by sampling, greedy or beam search.")
    parser.add_argument("model", type=Path, help="folder written by LanguageModel.save_pretrained (the HMM)")
    parser.add_argument("--prefix", "--prompt", dest="prefix", default="", help="text to continue (default: empty)")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--num-samples", type=int, default=1, help="continuations to draw (default 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    parser.add_argument("--keywords", nargs="+", default=None, help="concepts that must all appear; " + CONCEPTS_HELP)
    parser.add_argument("--any-keywords", nargs="+", default=None,
                        help="at least one of these concepts must appear; " + CONCEPTS_HELP)
    parser.add_argument("--banned", nargs="+", default=None, help="words/phrases that must not appear (commas "
                                                                  "or separate arguments)")
    parser.add_argument("--min-length", type=int, default=None, help="least tokens before --end-word")
    parser.add_argument("--max-length", type=int, default=None, help="most tokens before --end-word")
    parser.add_argument("--exact-length", type=int, default=None,
                        help="exactly this many tokens before --end-word (same as --min-length N --max-length N)")
    parser.add_argument("--end-word", default=None, help="token that ends the text for the length limits")
    parser.add_argument("--base-lm", default=None,
                        help="transformers causal LM (folder or HF-cache name) to steer with the HMM")
    parser.add_argument("--decoding", choices=DECODINGS, default="sample",
                        help="with --base-lm: sample (default), greedy or beam search")
    parser.add_argument("--num-beams", type=int, default=4, help="beams for --decoding beam (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="precision of the HMM's tables (default: as saved). bfloat16 halves their memory and, "
                             "with --base-lm, cuts the guidance cost per token (bench/RESULTS.md); probabilities "
                             "are then rounded to about 3 digits, and the constraints still hold exactly")
    parser.set_defaults(run=run)
    return parser


def _concepts(values: list[str] | None, option: str) -> list[list[str]]:
    concepts = []
    for value in values or []:
        for concept in value.split(","):
            forms = [form.strip() for form in concept.split("|") if form.strip()]
            if concept.strip() and not forms:
                raise ValueError(f"{option}: {concept!r} names no word; write words joined by | (run|runs|ran)")
            if forms:
                concepts.append(forms)
    if values is not None and not concepts:
        raise ValueError(f"{option} needs at least one word, got {values!r}")
    return concepts


def build_constraint(lm, args):
    """The intersection of the requested constraints, or None when there are none."""
    from ..constraints import intersect

    parts = []
    if args.keywords:
        parts.append(lm.concepts(_concepts(args.keywords, "--keywords"), mode="all"))
    if args.any_keywords:
        parts.append(lm.concepts(_concepts(args.any_keywords, "--any-keywords"), mode="any"))
    if args.banned:
        parts.append(lm.banned([word for value in args.banned for word in value.split(",") if word.strip()]))
    low, high = args.min_length, args.max_length
    if args.exact_length is not None:
        if low is not None or high is not None:
            raise ValueError("--exact-length replaces --min-length/--max-length; give one or the other")
        low = high = args.exact_length
    if low is not None or high is not None or args.end_word is not None:
        low = 0 if low is None else low
        high = args.max_new_tokens if high is None else high
        parts.append(lm.length(low, high, args.end_word))
    return intersect(*parts) if parts else None


def _check(args) -> None:
    for name in ("max_new_tokens", "num_samples", "num_beams"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.base_lm is None and (args.decoding != "sample" or args.num_beams != 4):
        raise ValueError("--decoding and --num-beams choose how the --base-lm model decodes; without --base-lm "
                         "use --temperature 0 for greedy decoding of the HMM")


def run(args) -> int:
    import torch

    from ..lm import LanguageModel

    _check(args)
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    lm = LanguageModel.from_pretrained(args.model, device=args.device, dtype=dtype)
    constraint = build_constraint(lm, args)
    if args.base_lm is None:
        texts = lm.generate(args.prefix, args.max_new_tokens, args.temperature, args.top_k, args.seed,
                            constraint=constraint, num_samples=args.num_samples)
    else:
        from ..lvd.causal_lm import load_causal_lm
        from ..steer import generate_steered

        model, tokenizer = load_causal_lm(args.base_lm, args.device)
        ids = generate_steered(model, tokenizer, lm, args.prefix, constraint, args.max_new_tokens, args.decoding,
                               args.num_samples, args.num_beams, args.temperature, args.top_k, args.seed)
        prompt = tokenizer.encode(args.prefix, add_special_tokens=False) if args.prefix else []
        texts = [tokenizer.decode(prompt + row) for row in ids]
    if constraint is not None and args.base_lm is None:
        log_prob = float(lm.constraint_log_prob(args.prefix, constraint, args.max_new_tokens)[0])
        print(f"# p(constraint | prefix) = {math.exp(log_prob):.4g} (log {log_prob:.3f})")
    for text in texts:
        print(f"{args.prefix} {text}".strip() if args.prefix and args.base_lm is None else text)
    return 0
