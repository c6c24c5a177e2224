"""``hmmlvd train``: an HMM on WikiText-2 from an LVD (or random) init, fine-tuned by two-phase EM."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..data import read_lines, windows, wikitext2
from ..em import mean_log_likelihood
from ..evaluate import PROTOCOLS, perplexity
from ..hmm import HMM
from ..io import atomic_write_json
from ..lvd.distill import DistillConfig, select_windows
from ..lvd.embeddings import stream_hash
from ..lvd.recipe import INITS, EMConfig, finetune, initial_hmm

SEQ_LEN = 32
# quick: the README job (LVD + random, trained and evaluated, <= 15 min on a 2-core CPU);
# cpu: the h=128/256 comparison of bench/RESULTS.md; paper: Appendix C's 20 + 5 epochs on
# every subsequence, distilled from every window (a GPU budget). EM on overlapping windows
# (stride 8) beat disjoint chunks by 2x in test perplexity at the same epochs (bench/RESULTS.md).
PRESETS = {
    "quick": {"num_states": 128, "lvd_windows": 512, "train_windows": None, "train_stride": 8, "phase1_epochs": 2,
              "phase2_epochs": 1, "batch_size": 16384, "eval_splits": "valid,test",
              "eval_protocols": "chunk,sliding", "sliding_max_tokens": None},
    "cpu": {"num_states": 128, "lvd_windows": 4096, "train_windows": None, "train_stride": 8, "phase1_epochs": 5,
            "phase2_epochs": 1, "batch_size": 16384, "eval_splits": "valid,test", "eval_protocols": "chunk,sliding",
            "sliding_max_tokens": None},
    "paper": {"num_states": 256, "lvd_windows": None, "train_windows": None, "train_stride": 1, "phase1_epochs": 20,
              "phase2_epochs": 5, "batch_size": 8192, "eval_splits": "valid,test",
              "eval_protocols": "chunk,sliding", "sliding_max_tokens": None},
}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train an HMM on WikiText-2 (LVD or random init, then two-phase mini-batch EM)",
        description="Distill (or randomly initialise) a non-homogeneous HMM over 32-token windows of WikiText-2, "
                    "fine-tune it with the paper's two-phase mini-batch EM on the training windows, save it and "
                    "print its perplexities. Preset values apply unless the option is given explicitly.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
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
    parser.add_argument("--cache-dir", help="embedding cache root (default $HMMLVD_CACHE or ~/.cache/hmmlvd)")
    parser.add_argument("--kmeans-iterations", type=int, default=20, help="Lloyd iterations (default 20)")
    parser.add_argument("--phase1-epochs", type=int)
    parser.add_argument("--phase1-step-size", type=float, default=0.5, help="EM step size in phase 1 (0.5)")
    parser.add_argument("--phase2-epochs", type=int)
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def _resolve(args) -> dict:
    """Preset values overridden by the options given explicitly."""
    settings = dict(PRESETS[args.preset])
    for name in settings:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    for name in ("lvd_windows", "train_windows", "sliding_max_tokens"):
        settings[name] = settings[name] or None
    settings["eval_splits"] = [s for s in settings["eval_splits"].split(",") if s]
    settings["eval_protocols"] = [p for p in settings["eval_protocols"].split(",") if p]
    for split in settings["eval_splits"]:
        if split not in ("valid", "test"):
            raise ValueError(f"--eval-splits takes valid and/or test, got {split!r}")
    for protocol in settings["eval_protocols"]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"--eval-protocols takes {PROTOCOLS}, got {protocol!r}")
    return settings


def _tokenizer(spec: str, lines_source):
    if spec == "word":
        return None
    from ..data.tokenizers import build_tokenizer  # sub-word tokenizers (another module of hmmlvd.data)

    return build_tokenizer(spec, lines_source())


def evaluate_all(hmm: HMM, corpus, settings: dict, init: str, stage: str, progress: bool) -> list[dict]:
    """Perplexity on every requested split and protocol, printed with its protocol, split, h and init."""
    results = []
    for split in settings["eval_splits"]:
        stream = corpus.split(split)
        for protocol in settings["eval_protocols"]:
            limit = settings["sliding_max_tokens"] if protocol == "sliding" else None
            part = stream[:limit] if limit else stream
            name = split if part is stream else f"{split}[:{len(part)}]"
            start = time.perf_counter()
            result = perplexity(hmm, part, protocol, split=name, progress=progress)
            print(f"[{stage}] {result.describe(hmm.num_states, init)}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
            results.append({**asdict(result), "stage": stage, "init": init, "num_states": hmm.num_states,
                            "seconds": time.perf_counter() - start})
    return results


def train_one(init: str, corpus, settings: dict, args, out: Path) -> dict:
    """Init, evaluate the init, fine-tune, evaluate, save: one model into ``out``."""
    progress = not args.no_progress
    train = windows(corpus.train, SEQ_LEN, SEQ_LEN)
    data_key = f"{stream_hash(corpus.train)}:{SEQ_LEN}:{SEQ_LEN}"
    distill_config = DistillConfig(settings["num_states"], settings["lvd_windows"], args.encoder,
                                   args.encoder_batch_size, args.kmeans_iterations, args.lvd_pseudocount, args.seed,
                                   args.cache_dir)
    em_config = EMConfig(settings["phase1_epochs"], args.phase1_step_size, settings["phase2_epochs"],
                         args.phase2_step_size, settings["batch_size"], args.pseudocount, args.seed)
    report = {"init": init, "settings": settings, "em": asdict(em_config), "distill": asdict(distill_config)}
    init_dir = out / "init"
    start = time.perf_counter()
    if args.resume and (init_dir / "config.json").is_file():
        hmm, stats = HMM.from_pretrained(init_dir), None
    else:
        hmm, stats = initial_hmm(init, train, corpus.tokenizer, distill_config, data_key, progress)
        hmm.save_pretrained(init_dir)
    hmm = hmm.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hmm.allow_tf32 = args.tf32
    report["init_seconds"] = time.perf_counter() - start
    report["lvd_stats"] = stats.as_dict() if stats is not None else None
    if stats is not None:
        print(f"[lvd] {stats.num_windows} windows: {stats.embedding.num_suffixes_computed} suffixes embedded in "
              f"{stats.embedding.seconds:.0f} s ({stats.embedding.suffixes_per_second or 0:.0f} suffixes/s), "
              f"K-means {stats.kmeans_seconds:.1f} s, counting {stats.counting_seconds:.2f} s", flush=True)
    report["perplexity"] = evaluate_all(hmm, corpus, {**settings, "eval_splits": ["test"],
                                                      "eval_protocols": ["chunk"], "sliding_max_tokens": None},
                                        init, "init", progress)
    valid_windows = windows(corpus.valid, SEQ_LEN, SEQ_LEN)
    report["init_valid_log_likelihood"] = mean_log_likelihood(hmm, valid_windows, 1024, hmm.device)
    em_windows = windows(corpus.train, SEQ_LEN, settings["train_stride"])
    if settings["train_windows"] is not None and settings["train_windows"] < len(em_windows):
        em_windows = em_windows[select_windows(len(em_windows), settings["train_windows"], args.seed + 1)]
    epoch_times: list[float] = []
    clock = [time.perf_counter()]

    def on_epoch_end(epoch, history):
        epoch_times.append(time.perf_counter() - clock[0])
        clock[0] = time.perf_counter()
        print(f"[{init}] epoch {epoch + 1}/{em_config.schedule().num_epochs}: train ll/window "
              f"{history.train_log_likelihood[-1]:.2f}, valid ll/window {history.valid_log_likelihood[-1]:.2f} "
              f"({epoch_times[-1]:.0f} s with validation)", flush=True)

    checkpoints = None if args.no_checkpoints else out / "checkpoint"
    history = finetune(hmm, em_windows, em_config, checkpoints, args.resume and checkpoints is not None,
                       valid_windows=valid_windows, progress=progress,
                       on_epoch_end=on_epoch_end)
    report.update(history=history.as_dict(), em_windows=len(em_windows), em_epoch_seconds=epoch_times)
    hmm.save_pretrained(out)
    corpus.tokenizer.save(out)
    report["perplexity"] += evaluate_all(hmm, corpus, settings, init, "final", progress)
    atomic_write_json(out / "results.json", report)
    return report


def run(args) -> int:
    settings = _resolve(args)
    start = time.perf_counter()
    tokenizer = _tokenizer(args.tokenizer, lambda: read_lines(args.data_dir, not args.no_verify)[0]["train"])
    corpus = wikitext2(args.data_dir, tokenizer=tokenizer, verify=not args.no_verify)
    print(f"WikiText-2 from {corpus.source}: train {len(corpus.train)}, valid {len(corpus.valid)}, "
          f"test {len(corpus.test)} tokens, vocabulary {corpus.tokenizer.vocab_size}", flush=True)
    inits = [args.init] + (["random"] if args.compare_random and args.init != "random" else [])
    reports = []
    for init in inits:
        out = args.out if len(inits) == 1 else args.out / init
        reports.append(train_one(init, corpus, settings, args, out))
    print("\nsummary (perplexity; lower is better)")
    for report in reports:
        for row in report["perplexity"]:
            print(f"  {row['stage']:>5} init={row['init']:<6} h={row['num_states']:<5} {row['protocol']:<7} "
                  f"{row['split']:<14} {row['perplexity']:10.2f}")
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    return 0
