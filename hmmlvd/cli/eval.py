"""``hmmlvd eval``: perplexity of a saved HMM on WikiText-2 under a named protocol."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data import wikitext2
from ..distributed import process_group_from_env
from ..data.tokenizers import load_tokenizer
from ..evaluate import PROTOCOLS, perplexity
from ..hmm import HMM
from ..io import read_json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="perplexity of a saved HMM on WikiText-2 (chunk or sliding protocol)",
        description="Load a model folder written by 'hmmlvd train' (config.json, model.safetensors, "
                    "tokenizer.json), tokenise the split with its tokenizer and print the perplexity.")
    parser.add_argument("model", type=Path, help="model folder written by 'hmmlvd train'")
    parser.add_argument("--protocol", choices=PROTOCOLS, nargs="+", default=["chunk", "sliding"],
                        help="chunk: disjoint 32-token windows; sliding: each token given the previous 31")
    parser.add_argument("--split", choices=("valid", "test"), nargs="+", default=["test"],
                        help="WikiText-2 splits to score (default test)")
    parser.add_argument("--data-dir", help="WikiText-2 folder (default $HMMLVD_DATA, then Hugging Face datasets)")
    parser.add_argument("--max-tokens", type=int, help="evaluate only the first N tokens of each split")
    parser.add_argument("--batch-size", type=int, default=1024, help="windows per forward pass (default 1024)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, run the forward-backward GEMMs on TF32 tensor cores (fp32 accumulation)")
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the data files")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    """Evaluate alone or under ``torchrun`` (each rank scores its shard; rank 0 prints)."""
    with process_group_from_env() as (rank, _):
        return _run(args, rank)


def _run(args, rank: int) -> int:
    hmm = HMM.from_pretrained(args.model, device=args.device)
    hmm.allow_tf32 = args.tf32
    tokenizer = load_tokenizer(args.model)  # the word vocabulary or a sub-word tokenizer
    if tokenizer.vocab_size != hmm.vocab_size:
        raise ValueError(f"{args.model}: the tokenizer has {tokenizer.vocab_size} tokens but the HMM "
                         f"{hmm.vocab_size}; the folder mixes two models")
    results = args.model / "results.json"
    init = read_json(results).get("init", "unknown") if results.is_file() else "unknown"
    corpus = wikitext2(args.data_dir, tokenizer=tokenizer, verify=not args.no_verify)
    for split in args.split:
        stream = corpus.split(split)
        name = split
        if args.max_tokens:
            stream, name = stream[:args.max_tokens], f"{split}[:{args.max_tokens}]"
        for protocol in args.protocol:
            result = perplexity(hmm, stream, protocol, split=name, batch_size=args.batch_size,
                                progress=not args.no_progress and rank == 0)
            if rank == 0:
                print(result.describe(hmm.num_states, init))
    return 0
