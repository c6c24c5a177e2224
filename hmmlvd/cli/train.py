"""``hmmlvd train``: an HMM on WikiText-2 from an LVD (or random) init, fine-tuned by two-phase EM."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch.distributed as dist

from ..data import read_lines, wikitext2
from ..distributed import is_main_process, process_group_from_env, rank_and_world_size
from ..io import atomic_write_json
from ..lm import LanguageModel
from ..lvd.encoder import ENCODER_DTYPES
from ..lvd.recipe import INITS, RECIPE_PRESETS, RecipeConfig, resolve_preset, train


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train an HMM on WikiText-2 (LVD or random init, then two-phase mini-batch EM)",
        description="Distill (or randomly initialise) a non-homogeneous HMM over 32-token windows of WikiText-2, "
                    "fine-tune it with the paper's two-phase mini-batch EM on the training windows, save it and "
                    "print its perplexities. Preset values apply unless the option is given explicitly.")
    parser.add_argument("--preset", choices=sorted(RECIPE_PRESETS), default="quick",
                        help="defaults for the options below (default quick: the 15-minute README job)")
    parser.add_argument("--init", choices=INITS, default="lvd", help="initialisation (default lvd)")
    parser.add_argument("--compare-random", action="store_true",
                        help="also train a random-init HMM with the same EM budget (into OUT/random)")
    parser.add_argument("--num-states", type=int, help="hidden states h")
    parser.add_argument("--data-dir", help="WikiText-2 folder (wiki.*.tokens[.xz]); default $HMMLVD_DATA, "
                                           "then the Hugging Face datasets fallback")
    parser.add_argument("--out", type=Path, required=True, help="output folder (model, tokenizer, results.json)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoints")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="skip the per-epoch EM checkpoints (each one writes the whole model; at h >= 1024 "
                             "that is gigabytes per epoch); --resume then restarts EM from the saved init")
    parser.add_argument("--lvd-windows", type=int, help="training windows to distill from (seeded subsample); "
                                                        "0 = all (a GPU budget)")
    parser.add_argument("--train-windows", type=int, help="training windows for EM (seeded subsample); 0 = all")
    parser.add_argument("--train-stride", type=int, help="stride of the EM training windows: 32 = disjoint "
                                                         "chunks, 1 = every subsequence (the paper)")
    parser.add_argument("--encoder", help="HF encoder name or path (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--encoder-batch-size", type=int, default=128, help="suffixes per encoder batch")
    parser.add_argument("--encoder-dtype", choices=ENCODER_DTYPES, default="auto",
                        help="encoder precision (autocast); auto: float16 on CUDA, bfloat16 on CPUs with bf16 "
                             "matrix units (AMX / AVX512-BF16), float32 elsewhere")
    parser.add_argument("--cache-dir", help="embedding cache root (default $HMMLVD_CACHE or ~/.cache/hmmlvd)")
    parser.add_argument("--kmeans-backend", choices=("auto", "torch"), default="auto",
                        help="auto: faiss in a single process when installed, torch otherwise; torch: always the "
                             "torch K-means (what every run under torchrun uses, so 1 and N processes agree)")
    parser.add_argument("--kmeans-iterations", type=int, default=20, help="Lloyd iterations (default 20)")
    parser.add_argument("--phase1-epochs", type=int, help="EM epochs of phase 1, at --phase1-step-size")
    parser.add_argument("--phase1-step-size", type=float, default=0.5, help="EM step size in phase 1 (0.5)")
    parser.add_argument("--phase2-epochs", type=int, help="EM epochs of phase 2, at --phase2-step-size")
    parser.add_argument("--phase2-step-size", type=float, default=0.2, help="EM step size in phase 2 (0.2)")
    parser.add_argument("--batch-size", type=int, help="windows per EM update")
    parser.add_argument("--pseudocount", type=float, default=1.0,
                        help="EM M-step pseudocount (default 1.0: better valid likelihood than 0.1)")
    parser.add_argument("--lvd-pseudocount", type=float, default=10.0,
                        help="pseudocount of the closed-form LVD fit (default 10, chosen on valid; it "
                             "smooths the emissions of words the subsample never shows at a position)")
    parser.add_argument("--eval-splits", help="comma-separated splits to evaluate (valid,test)")
    parser.add_argument("--eval-protocols", help="comma-separated protocols (chunk,sliding)")
    parser.add_argument("--sliding-max-tokens", type=int,
                        help="evaluate the sliding protocol on the first N tokens of each split (0 = all)")
    parser.add_argument("--tokenizer", default="word",
                        help="word (default), hf:NAME_OR_PATH or sentencepiece:bpe|unigram:SIZE")
    parser.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the data files")
    parser.add_argument("--device", help="torch device for EM and evaluation (default cuda when available)")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, run the forward-backward GEMMs on TF32 tensor cores (fp32 accumulation)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subsamples, K-means, random init and EM batch order (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def _resolve(args, init: str) -> dict:
    """The preset's settings overridden by the options given (the flat settings results.json records)."""
    return resolve_preset(
        args.preset, num_states=args.num_states, lvd_windows=args.lvd_windows, train_windows=args.train_windows,
        train_stride=args.train_stride, phase1_epochs=args.phase1_epochs, phase2_epochs=args.phase2_epochs,
        batch_size=args.batch_size, eval_splits=args.eval_splits, eval_protocols=args.eval_protocols,
        sliding_max_tokens=args.sliding_max_tokens, phase1_step_size=args.phase1_step_size,
        phase2_step_size=args.phase2_step_size, pseudocount=args.pseudocount, lvd_pseudocount=args.lvd_pseudocount,
        encoder=args.encoder, encoder_batch_size=args.encoder_batch_size, encoder_dtype=args.encoder_dtype,
        kmeans_iterations=args.kmeans_iterations, cache_dir=args.cache_dir, kmeans_backend=args.kmeans_backend,
        init=init, seed=args.seed, checkpoints=not args.no_checkpoints, device=args.device, tf32=args.tf32,
        progress=not args.no_progress and rank_and_world_size()[0] == 0)


def _tokenizer(spec: str, lines_source):
    if spec == "word":
        return None
    from ..data.tokenizers import build_tokenizer  # sub-word tokenizers (another module of hmmlvd.data)

    return build_tokenizer(spec, lines_source())


def train_one(config: RecipeConfig, corpus, settings: dict, args, out: Path) -> dict:
    """Run the recipe for one init into ``out``; rank 0 saves the model, tokenizer and results.json."""
    result = train(corpus, config, out, resume=args.resume, log=_say)
    world_size = rank_and_world_size()[1]
    report = {"init": config.init, "world_size": world_size,
              "backend": dist.get_backend() if world_size > 1 else None, "settings": settings,
              "em": config.em_settings(), "distill": asdict(config.distill),
              "init_seconds": result.init_seconds,
              "lvd_stats": result.lvd_stats.as_dict() if result.lvd_stats is not None else None,
              "perplexity": result.perplexity, "init_valid_log_likelihood": result.init_valid_log_likelihood,
              "history": result.history.as_dict(), "em_windows": result.em_windows,
              "em_epoch_seconds": result.em_epoch_seconds}
    if is_main_process():
        LanguageModel(result.hmm, corpus.tokenizer).save_pretrained(out)
        atomic_write_json(out / "results.json", report)
    return report


def _say(line: str = "") -> None:
    """Print on rank 0 only (every rank runs the same recipe under torchrun)."""
    if is_main_process():
        print(line, flush=True)


def run(args) -> int:
    """Train under ``torchrun`` (one process per device, NCCL or gloo chosen automatically) or alone."""
    with process_group_from_env():
        return _run(args)


def _run(args) -> int:
    inits = [args.init] + (["random"] if args.compare_random and args.init != "random" else [])
    settings = [_resolve(args, init) for init in inits]
    configs = [RecipeConfig.from_settings(one) for one in settings]     # validates before loading data
    start = time.perf_counter()
    tokenizer = _tokenizer(args.tokenizer, lambda: read_lines(args.data_dir, not args.no_verify)[0]["train"])
    corpus = wikitext2(args.data_dir, tokenizer=tokenizer, verify=not args.no_verify)
    _say(f"WikiText-2 from {corpus.source}: train {len(corpus.train)}, valid {len(corpus.valid)}, "
          f"test {len(corpus.test)} tokens, vocabulary {corpus.tokenizer.vocab_size}")
    reports = []
    for config, one in zip(configs, settings):
        out = args.out if len(configs) == 1 else args.out / config.init
        reports.append(train_one(config, corpus, one, args, out))
    _say("\nsummary (perplexity; lower is better)")
    for report in reports:
        for row in report["perplexity"]:
            _say(f"  {row['stage']:>5} init={row['init']:<6} h={row['num_states']:<5} {row['protocol']:<7} "
                  f"{row['split']:<14} {row['perplexity']:10.2f}")
    _say(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0
