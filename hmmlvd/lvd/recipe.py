"""The end-to-end text recipe: an initial HMM (LVD or random), two-phase mini-batch EM, perplexities.

``train(data, config)`` is the whole job behind ``hmmlvd train`` and ``hmmlvd distill-lm``; both inits go
through the same EM, so a comparison gives them the same budget. ``data`` is a WikiText-style corpus of token
streams, or :class:`WindowSplits` of fixed-length sequences in any tokenizer (a causal LM's samples).
``RecipeConfig.preset(name, **overrides)`` assembles a configuration from :data:`RECIPE_PRESETS`. The image
recipe follows the same shape (a config dataclass and ``train(data, config)``).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from torch import Tensor

from .. import em
from ..data import WindowSplits, windows
from ..distributed import default_device, is_main_process
from ..evaluate import PROTOCOLS, Perplexity, perplexity, windows_perplexity
from ..hmm import HMM, HMMConfig
from .distill import DistillConfig, DistillStats, distill, select_windows
from .embeddings import stream_hash

INITS = ("lvd", "random")
SPLITS = ("valid", "test")
INIT_DIR, CHECKPOINT_DIR = "init", "checkpoint"
# quick: the README job (LVD + random, trained and evaluated, <= 15 min on a 2-core CPU);
# cpu: the h=128/256 comparison of bench/RESULTS.md; paper: Appendix C's 20 + 5 epochs on
# every subsequence, distilled from every window (a GPU budget). EM on overlapping windows
# (stride 8) beat disjoint chunks by 2x in test perplexity at the same epochs (bench/RESULTS.md).
RECIPE_PRESETS = {
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
#: Settings outside the presets that ``RecipeConfig.preset`` takes, with their defaults (those of ``hmmlvd train``).
PRESET_DEFAULTS = {"phase1_step_size": 0.5, "phase2_step_size": 0.2, "pseudocount": 1.0, "lvd_pseudocount": 10.0,
                   "seq_len": 32}
_DISTILL_FIELDS = ("encoder", "encoder_batch_size", "encoder_dtype", "kmeans_iterations", "cache_dir",
                   "kmeans_backend")
_RECIPE_FIELDS = ("init", "seed", "checkpoints", "device", "tf32", "progress")
_ALL_MEANS_NONE = ("lvd_windows", "train_windows", "sliding_max_tokens")


def resolve_preset(name: str, **overrides) -> dict:
    """The flat settings of preset ``name`` with every override that is not None applied (what results.json
    records). For ``lvd_windows``, ``train_windows`` and ``sliding_max_tokens`` an override of 0 means all
    (None); ``eval_splits`` / ``eval_protocols`` may be comma-separated strings or sequences."""
    if name not in RECIPE_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(RECIPE_PRESETS)}")
    known = set(RECIPE_PRESETS[name]) | set(PRESET_DEFAULTS) | set(_DISTILL_FIELDS) | set(_RECIPE_FIELDS)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"RecipeConfig.preset got unknown settings {unknown}; known: {sorted(known)}")
    settings = {**RECIPE_PRESETS[name], **PRESET_DEFAULTS,
                **{key: value for key, value in overrides.items() if value is not None}}
    for key in _ALL_MEANS_NONE:
        settings[key] = settings[key] or None
    for key in ("eval_splits", "eval_protocols"):
        value = settings[key]
        settings[key] = [part for part in value.split(",") if part] if isinstance(value, str) else list(value)
    return settings


@dataclass(frozen=True)
class RecipeConfig:
    """Everything ``train`` needs besides the data.

    ``num_states`` is h (None: taken from ``distill.num_states``); ``distill`` sets the LVD stage (its
    ``num_states`` is filled in from h); ``schedule``, ``batch_size``,
    ``pseudocount`` and ``seed`` the EM stage on windows of ``seq_len`` tokens cut every
    ``train_stride`` tokens (``train_windows``: a seeded subsample, None = all). The final model is
    evaluated on every split of ``eval_splits`` under every protocol of ``eval_protocols``
    (sliding on the first ``sliding_max_tokens`` tokens when set).
    """

    distill: DistillConfig = field(default_factory=DistillConfig)
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
    num_states: int | None = None

    def __post_init__(self) -> None:
        given, distilled = self.num_states, self.distill.num_states
        if given is None and distilled is None:
            raise ValueError("RecipeConfig needs h: num_states=... (or DistillConfig(num_states=...))")
        if given is not None and distilled is not None and given != distilled:
            raise ValueError(f"num_states={given} disagrees with distill.num_states={distilled}; give h once")
        num_states = given if given is not None else distilled
        if isinstance(num_states, bool) or not isinstance(num_states, int) or num_states < 1:
            raise ValueError(f"num_states must be a positive integer, got {num_states!r}")
        object.__setattr__(self, "num_states", num_states)
        object.__setattr__(self, "distill", replace(self.distill, num_states=num_states))
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

    @classmethod
    def preset(cls, name: str, **overrides) -> "RecipeConfig":
        """The configuration of preset ``name`` (:data:`RECIPE_PRESETS`) with ``overrides`` applied (None = keep);
        see :func:`resolve_preset` for the names. ``seed`` seeds the LVD stage and EM alike."""
        return cls.from_settings(resolve_preset(name, **overrides))

    @classmethod
    def from_settings(cls, settings: dict) -> "RecipeConfig":
        """The configuration of flat settings from :func:`resolve_preset`."""
        seed = settings.get("seed", 0)
        distill_config = DistillConfig(settings["num_states"], settings["lvd_windows"], seed=seed,
                                       pseudocount=settings["lvd_pseudocount"],
                                       **{key: settings[key] for key in _DISTILL_FIELDS if key in settings})
        schedule = em.TwoPhase(settings["phase1_epochs"], settings["phase1_step_size"], settings["phase2_epochs"],
                               settings["phase2_step_size"])
        return cls(distill_config, schedule=schedule, batch_size=settings["batch_size"],
                   pseudocount=settings["pseudocount"], seq_len=settings["seq_len"],
                   train_stride=settings["train_stride"], train_windows=settings["train_windows"],
                   eval_splits=tuple(settings["eval_splits"]), eval_protocols=tuple(settings["eval_protocols"]),
                   sliding_max_tokens=settings["sliding_max_tokens"],
                   **{key: settings[key] for key in _RECIPE_FIELDS if key in settings})

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


def initial_hmm(init: str, train_windows: Tensor, tokenizer, distill_config: DistillConfig, data_key: str,
                progress: bool = True, encoder=None) -> tuple[HMM, DistillStats | None]:
    """The HMM that EM starts from: LVD's closed-form fit (teacher ``encoder``, see :func:`distill`), or random
    parameters (seeded) with h = ``distill_config.num_states``."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "lvd":
        return distill(train_windows, tokenizer, distill_config, data_key, encoder=encoder, progress=progress)
    config = HMMConfig(distill_config.num_states, tokenizer.vocab_size, train_windows.shape[1])
    return HMM.random(config, seed=distill_config.seed), None


def _evaluate(hmm: HMM, data, split: str, protocol: str, config: RecipeConfig) -> Perplexity:
    """One perplexity figure: a stream under ``protocol``, or window data sequence by sequence."""
    if isinstance(data, WindowSplits):
        return windows_perplexity(hmm, data.split(split), split, progress=config.progress)
    stream = data.split(split)
    limit = config.sliding_max_tokens if protocol == "sliding" else None
    part = stream[:limit] if limit else stream
    name = split if part is stream else f"{split}[:{len(part)}]"
    return perplexity(hmm, part, protocol, split=name, progress=config.progress)


def evaluate_all(hmm: HMM, data, config: RecipeConfig, stage: str, log: Callable[[str], None],
                 splits: tuple[str, ...] | None = None, protocols: tuple[str, ...] | None = None) -> list[dict]:
    """Perplexity on every requested split and protocol, logged with its protocol, split, h and init.
    Window data (:class:`WindowSplits`) are independent sequences: only the ``chunk`` protocol applies."""
    results = []
    protocols = config.eval_protocols if protocols is None else protocols
    if isinstance(data, WindowSplits):
        protocols = ("chunk",)
    for split in config.eval_splits if splits is None else splits:
        for protocol in protocols:
            start = time.perf_counter()
            result = _evaluate(hmm, data, split, protocol, config)
            log(f"[{stage}] {result.describe(hmm.num_states, config.init)}  ({time.perf_counter() - start:.0f} s)")
            results.append({**asdict(result), "stage": stage, "init": config.init, "num_states": hmm.num_states,
                            "seconds": time.perf_counter() - start})
    return results


def _training_windows(data, config: RecipeConfig) -> tuple[Tensor, str, Tensor, Tensor]:
    """``(LVD windows [N, T], their cache key, EM windows, valid windows)`` of a corpus or of window data."""
    seq_len = config.seq_len
    if isinstance(data, WindowSplits):
        if data.seq_len != seq_len:
            raise ValueError(f"the windows hold {data.seq_len} tokens but seq_len={seq_len}; set seq_len to "
                             f"{data.seq_len}")
        em_windows = data.train
        key = data.key
    else:
        em_windows = windows(data.train, seq_len, config.train_stride)
        key = f"{stream_hash(data.train)}:{seq_len}:{seq_len}"
    lvd_windows = data.train if isinstance(data, WindowSplits) else windows(data.train, seq_len, seq_len)
    valid = data.valid if isinstance(data, WindowSplits) else windows(data.valid, seq_len, seq_len)
    if config.train_windows is not None and config.train_windows < len(em_windows):
        em_windows = em_windows[select_windows(len(em_windows), config.train_windows, config.seed + 1)]
    return lvd_windows, key, em_windows, valid


def train(data, config: RecipeConfig, directory: str | os.PathLike | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None, encoder=None) -> RecipeResult:
    """Init (LVD or random), evaluate the init, fine-tune by two-phase EM, evaluate the final HMM.

    ``data`` is a corpus with ``train``/``valid``/``test`` token streams [n] (``split(name)``) and a
    ``tokenizer``, or :class:`~hmmlvd.data.WindowSplits` of sequences [N, T] with T = ``config.seq_len``
    (then every training sequence is an EM window and ``train_stride`` does not apply). ``encoder`` is the
    LVD teacher (default: a :class:`SuffixEncoder` built from ``config.distill``; see :func:`distill`).
    With ``directory`` the init is saved in ``directory/init`` and EM checkpoints in
    ``directory/checkpoint``; ``resume=True`` re-uses both. ``log`` receives one line per stage.
    """
    log = log or (lambda line: None)
    directory = Path(directory) if directory is not None else None
    lvd_windows, data_key, em_windows, valid_windows = _training_windows(data, config)
    init_dir = directory / INIT_DIR if directory is not None else None
    start = time.perf_counter()
    if resume and init_dir is not None and (init_dir / "config.json").is_file():
        hmm, stats = HMM.from_pretrained(init_dir), None
    else:
        hmm, stats = initial_hmm(config.init, lvd_windows, data.tokenizer, config.distill, data_key,
                                 config.progress, encoder)
        if init_dir is not None and is_main_process():
            hmm.save_pretrained(init_dir)
    hmm = hmm.to(default_device(config.device))
    hmm.allow_tf32 = config.tf32
    init_seconds = time.perf_counter() - start
    if stats is not None:
        log(f"[lvd] {stats.num_windows} windows: {stats.embedding.num_suffixes_computed} suffixes embedded in "
            f"{stats.embedding.seconds:.0f} s ({stats.embedding.suffixes_per_second or 0:.0f} suffixes/s), "
            f"K-means {stats.kmeans_seconds:.1f} s, counting {stats.counting_seconds:.2f} s")
    rows = evaluate_all(hmm, data, config, "init", log, splits=("test",), protocols=("chunk",))
    init_valid = em.mean_log_likelihood(hmm, valid_windows, 1024, hmm.device)

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
    rows += evaluate_all(hmm, data, config, "final", log)
    return RecipeResult(hmm, history, rows, stats, init_seconds, init_valid, len(em_windows), epoch_seconds)
