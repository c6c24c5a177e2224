"""The end-to-end text recipe: an initial HMM (LVD or random), two-phase mini-batch EM, perplexities.

``train(corpus, config)`` is the whole job behind ``hmmlvd train``; both inits go through the same EM,
so a comparison gives them the same budget. The image recipe follows the same shape (a config
dataclass and ``train(data, config)``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .. import em
from ..data import windows
from ..distributed import rank_and_world_size
from ..evaluate import PROTOCOLS, perplexity
from ..hmm import HMM, HMMConfig
from .distill import DistillConfig, DistillStats, distill, select_windows
from .embeddings import stream_hash

INITS = ("lvd", "random")
SPLITS = ("valid", "test")
INIT_DIR, CHECKPOINT_DIR = "init", "checkpoint"


@dataclass(frozen=True)
class RecipeConfig:
    """Everything ``train`` needs besides the corpus.

    ``distill`` sets h (``distill.num_states``) and the LVD stage; ``schedule``, ``batch_size``,
    ``pseudocount`` and ``seed`` the EM stage on windows of ``seq_len`` tokens cut every
    ``train_stride`` tokens (``train_windows``: a seeded subsample, None = all). The final model is
    evaluated on every split of ``eval_splits`` under every protocol of ``eval_protocols``
    (sliding on the first ``sliding_max_tokens`` tokens when set).
    """

    distill: DistillConfig
    init: str = "lvd"
    schedule: em.TwoPhase = field(default_factory=lambda: em.TwoPhase(3, 0.5, 1, 0.2))
    batch_size: int = 8192
    pseudocount: float = 0.1
    seed: int = 0
    seq_len: int = 32
    train_stride: int = 32
    train_windows: int | None = None
    eval_splits: tuple[str, ...] = SPLITS
    eval_protocols: tuple[str, ...] = PROTOCOLS
    sliding_max_tokens: int | None = None
    checkpoints: bool = True
    device: str | None = None
    tf32: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.batch_size < 1 or self.pseudocount < 0:
            raise ValueError(f"batch_size must be >= 1 and pseudocount >= 0, got {self.batch_size}, "
                             f"{self.pseudocount}")
        if self.seq_len < 1 or self.train_stride < 1:
            raise ValueError(f"seq_len and train_stride must be >= 1, got {self.seq_len}, {self.train_stride}")
        for split in self.eval_splits:
            if split not in SPLITS:
                raise ValueError(f"eval_splits (--eval-splits) takes valid and/or test, got {split!r}")
        for protocol in self.eval_protocols:
            if protocol not in PROTOCOLS:
                raise ValueError(f"eval_protocols (--eval-protocols) takes {PROTOCOLS}, got {protocol!r}")

    def em_settings(self) -> dict:
        """The EM settings as one flat dict (the ``em`` entry of results.json)."""
        return {**asdict(self.schedule), "batch_size": self.batch_size, "pseudocount": self.pseudocount,
                "seed": self.seed}


@dataclass
class RecipeResult:
    """The trained HMM and what the run measured (``perplexity``: one row per stage, split and protocol)."""

    hmm: HMM
    history: em.History
    perplexity: list[dict]
    lvd_stats: DistillStats | None
    init_seconds: float
    init_valid_log_likelihood: float
    em_windows: int
    em_epoch_seconds: list[float]


def is_main_process() -> bool:
    """Only rank 0 of a ``torch.distributed`` run writes files (every rank when not distributed)."""
    return rank_and_world_size()[0] == 0


def initial_hmm(init: str, train_windows: Tensor, tokenizer, distill_config: DistillConfig, data_key: str,
                progress: bool = True) -> tuple[HMM, DistillStats | None]:
    """The HMM that EM starts from: LVD's closed-form fit, or random parameters (seeded)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "lvd":
        return distill(train_windows, tokenizer, distill_config, data_key, progress=progress)
    config = HMMConfig(distill_config.num_states, tokenizer.vocab_size, train_windows.shape[1])
    return HMM.random(config, seed=distill_config.seed), None


def evaluate_all(hmm: HMM, corpus, config: RecipeConfig, stage: str, log: Callable[[str], None],
                 splits: tuple[str, ...] | None = None, protocols: tuple[str, ...] | None = None) -> list[dict]:
    """Perplexity on every requested split and protocol, logged with its protocol, split, h and init."""
    results = []
    for split in config.eval_splits if splits is None else splits:
        stream = corpus.split(split)
        for protocol in config.eval_protocols if protocols is None else protocols:
            limit = config.sliding_max_tokens if protocol == "sliding" else None
            part = stream[:limit] if limit else stream
            name = split if part is stream else f"{split}[:{len(part)}]"
            start = time.perf_counter()
            result = perplexity(hmm, part, protocol, split=name, progress=config.progress)
            log(f"[{stage}] {result.describe(hmm.num_states, config.init)}  ({time.perf_counter() - start:.0f} s)")
            results.append({**asdict(result), "stage": stage, "init": config.init, "num_states": hmm.num_states,
                            "seconds": time.perf_counter() - start})
    return results


def train(corpus, config: RecipeConfig, directory: str | os.PathLike | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None) -> RecipeResult:
    """Init (LVD or random), evaluate the init, fine-tune by two-phase EM, evaluate the final HMM.

    ``corpus`` has ``train``/``valid``/``test`` token streams [n] (``split(name)``) and a ``tokenizer``.
    With ``directory`` the init is saved in ``directory/init`` and EM checkpoints in
    ``directory/checkpoint``; ``resume=True`` re-uses both. ``log`` receives one line per stage.
    """
    log = log or (lambda line: None)
    directory = Path(directory) if directory is not None else None
    seq_len = config.seq_len
    train_windows = windows(corpus.train, seq_len, seq_len)
    data_key = f"{stream_hash(corpus.train)}:{seq_len}:{seq_len}"
    init_dir = directory / INIT_DIR if directory is not None else None
    start = time.perf_counter()
    if resume and init_dir is not None and (init_dir / "config.json").is_file():
        hmm, stats = HMM.from_pretrained(init_dir), None
    else:
        hmm, stats = initial_hmm(config.init, train_windows, corpus.tokenizer, config.distill, data_key,
                                 config.progress)
        if init_dir is not None and is_main_process():
            hmm.save_pretrained(init_dir)
    hmm = hmm.to(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hmm.allow_tf32 = config.tf32
    init_seconds = time.perf_counter() - start
    if stats is not None:
        log(f"[lvd] {stats.num_windows} windows: {stats.embedding.num_suffixes_computed} suffixes embedded in "
            f"{stats.embedding.seconds:.0f} s ({stats.embedding.suffixes_per_second or 0:.0f} suffixes/s), "
            f"K-means {stats.kmeans_seconds:.1f} s, counting {stats.counting_seconds:.2f} s")
    rows = evaluate_all(hmm, corpus, config, "init", log, splits=("test",), protocols=("chunk",))
    valid_windows = windows(corpus.valid, seq_len, seq_len)
    init_valid = em.mean_log_likelihood(hmm, valid_windows, 1024, hmm.device)
    em_windows = windows(corpus.train, seq_len, config.train_stride)
    if config.train_windows is not None and config.train_windows < len(em_windows):
        em_windows = em_windows[select_windows(len(em_windows), config.train_windows, config.seed + 1)]

    epoch_seconds: list[float] = []
    clock = [time.perf_counter()]

    def on_epoch_end(epoch: int, history: em.History) -> None:
        epoch_seconds.append(time.perf_counter() - clock[0])
        clock[0] = time.perf_counter()

    checkpoint_dir = directory / CHECKPOINT_DIR if directory is not None and config.checkpoints else None
    if checkpoint_dir is not None and is_main_process():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    history = em.fit(hmm, em_windows, config.schedule, batch_size=config.batch_size,
                     pseudocount=config.pseudocount, valid=valid_windows, checkpoint_dir=checkpoint_dir,
                     resume=resume and checkpoint_dir is not None, seed=config.seed, progress=config.progress,
                     on_epoch_end=on_epoch_end)
    rows += evaluate_all(hmm, corpus, config, "final", log)
    return RecipeResult(hmm, history, rows, stats, init_seconds, init_valid, len(em_windows), epoch_seconds)
