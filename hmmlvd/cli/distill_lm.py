"""``hmmlvd distill-lm``: an HMM for a given causal LM, distilled from its samples (GeLaTo / Ctrl-G)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.lm_samples import SampleSettings
from ..distributed import is_main_process, process_group_from_env, rank_and_world_size
from ..lvd.encoder import ENCODER_DTYPES
from ..lvd.lm_recipe import TEACHERS, DistillLMConfig, distill_lm
from ..lvd.recipe import INITS, RECIPE_PRESETS, RecipeConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill-lm", help="distil an HMM from a causal LM's samples (LVD, then EM), for steering that LM",
        description="Draw samples from a transformers causal LM (cached and resumable), distil a non-homogeneous "
                    "HMM over them in the LM's tokenizer (LVD init, two-phase EM), save it as a language model "
                    "with the LM's tokenizer and report held-out log-likelihoods per token next to the LM's own.")
    parser.add_argument("model", help="transformers causal LM: a local folder or a name in the HF cache")
    parser.add_argument("--out", type=Path, required=True, help="output folder (model, tokenizer, results.json)")
    parser.add_argument("--resume", action="store_true", help="continue sampling, the init and EM where OUT stopped")
    parser.add_argument("--num-samples", type=int, default=10000, help="training samples (default 10000)")
    parser.add_argument("--heldout-samples", type=int, default=1000,
                        help="samples for each of the valid and test splits (default 1000)")
    parser.add_argument("--num-tokens", type=int, default=32, help="tokens per sample = the HMM window (default 32)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    parser.add_argument("--sample-batch-size", type=int, default=64, help="sequences per LM forward (default 64)")
    parser.add_argument("--shard-size", type=int, default=1024, help="samples per cache shard (default 1024)")
    parser.add_argument("--prompts", type=Path, help="text file, one prompt per line (default: unconditional)")
    parser.add_argument("--sample-cache-dir", help="sample cache root (default $HMMLVD_CACHE or ~/.cache/hmmlvd)")
    parser.add_argument("--teacher", choices=TEACHERS, default="suffix",
                        help="LVD features: suffix (suffix embeddings of --encoder) or hidden (the LM's hidden states)")
    parser.add_argument("--teacher-layer", type=int, default=-1, help="hidden-state layer for --teacher hidden")
    parser.add_argument("--preset", choices=sorted(RECIPE_PRESETS), default="quick",
                        help="defaults of h, LVD windows and EM epochs (those of hmmlvd train; default quick)")
    parser.add_argument("--init", choices=INITS, default="lvd", help="initialisation (default lvd)")
    parser.add_argument("--compare-random", action="store_true",
                        help="also train a random-init HMM with the same EM budget (OUT/lvd and OUT/random)")
    parser.add_argument("--num-states", type=int, help="hidden states h")
    parser.add_argument("--lvd-windows", type=int, help="samples to distil from (seeded subsample); 0 = all")
    parser.add_argument("--train-windows", type=int, help="samples for EM (seeded subsample); 0 = all")
    parser.add_argument("--phase1-epochs", type=int, help="EM epochs of phase 1 (step size 0.5)")
    parser.add_argument("--phase2-epochs", type=int, help="EM epochs of phase 2 (step size 0.2)")
    parser.add_argument("--batch-size", type=int, help="sequences per EM update")
    parser.add_argument("--encoder", help="HF encoder for --teacher suffix (default: offline all-MiniLM-L6-v2)")
    parser.add_argument("--encoder-dtype", choices=ENCODER_DTYPES, default="auto", help="encoder precision")
    parser.add_argument("--cache-dir", help="embedding cache root (default $HMMLVD_CACHE or ~/.cache/hmmlvd)")
    parser.add_argument("--kmeans-backend", choices=("auto", "torch"), default="auto",
                        help="auto: faiss in one process when installed; torch: always torch (as under torchrun)")
    parser.add_argument("--device", help="torch device for the LM and EM (default cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling, subsamples, K-means and EM (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def build_config(args) -> DistillLMConfig:
    """The configuration of the options (validated, before anything is loaded)."""
    progress = not args.no_progress and rank_and_world_size()[0] == 0
    sampling = SampleSettings(num_tokens=args.num_tokens, temperature=args.temperature, seed=args.seed,
                              shard_size=args.shard_size, batch_size=args.sample_batch_size)
    recipe = RecipeConfig.preset(
        args.preset, num_states=args.num_states, lvd_windows=args.lvd_windows, train_windows=args.train_windows,
        phase1_epochs=args.phase1_epochs, phase2_epochs=args.phase2_epochs, batch_size=args.batch_size,
        encoder=args.encoder, encoder_dtype=args.encoder_dtype, cache_dir=args.cache_dir,
        kmeans_backend=args.kmeans_backend, init=args.init, seed=args.seed, device=args.device, progress=progress,
        seq_len=args.num_tokens, eval_splits="valid,test", eval_protocols="chunk")
    prompts = None
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise ValueError(f"--prompts {args.prompts} is not a file; give a text file with one prompt per line")
        prompts = tuple(args.prompts.read_text(encoding="utf-8").splitlines())
    return DistillLMConfig(args.model, recipe, num_samples=args.num_samples, heldout_samples=args.heldout_samples,
                           sampling=sampling, prompts=prompts, teacher=args.teacher, teacher_layer=args.teacher_layer,
                           compare_random=args.compare_random, sample_cache_dir=args.sample_cache_dir)


def _say(line: str = "") -> None:
    if is_main_process():
        print(line, flush=True)


def run(args) -> int:
    """Distil under ``torchrun`` (sharded sampling, LVD and EM; rank 0 writes) or in one process."""
    config = build_config(args)
    with process_group_from_env():
        start = time.perf_counter()
        result = distill_lm(config, args.out, resume=args.resume, log=_say)
        report = result.report
        _say("\nheld-out LM samples, log-likelihood per token (higher is better)")
        _say(f"  the LM itself            {report['lm_test_log_likelihood_per_token']:9.4f}")
        for init, row in report["models"].items():
            _say(f"  HMM h={config.recipe.num_states:<5} init={init:<6} {row['test_log_likelihood_per_token']:9.4f}"
                 f"   (perplexity {row['test_perplexity']:.2f})")
        _say(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0
