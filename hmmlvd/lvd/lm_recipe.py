"""Distil an HMM from a causal LM (the GeLaTo / Ctrl-G workflow): the job behind ``hmmlvd distill-lm``.

The LM's samples (train, valid and held-out test, each from its own seeds, cached) go through the text recipe
(:func:`hmmlvd.lvd.recipe.train`) as :class:`~hmmlvd.data.WindowSplits` in the LM's tokenizer: LVD (suffix
embeddings, or the LM's own hidden states as teacher), closed form, two-phase EM, with checkpoints and exact
resume; optionally a random-init HMM with the same EM budget. The results are saved as ``LanguageModel`` folders
with the LM's tokenizer, so ``hmmlvd.load``, ``score`` and ``generate`` work on them.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from torch import Tensor

from ..data import WindowSplits
from ..data.lm_samples import SampleSettings, start_token
from ..data.tokenizers import HFTokenizer
from ..distributed import is_main_process, rank_and_world_size
from ..io import atomic_write_json
from ..lm import LanguageModel
from .causal_lm import HiddenStateTeacher, lm_samples, load_causal_lm
from .recipe import RecipeConfig, train

TEACHERS = ("suffix", "hidden")


@dataclass(frozen=True)
class DistillLMConfig:
    """What ``distill_lm`` does besides where it writes.

    ``model``: a transformers causal LM (name or folder). ``num_samples`` training sequences and
    ``heldout_samples`` sequences each for the valid and test splits, drawn with ``sampling`` (``num_tokens``
    = the HMM window), after the lines of ``prompts`` (None: unconditional). ``teacher``: ``"suffix"`` (the
    recipe's suffix encoder) or ``"hidden"`` (the LM's hidden states at ``teacher_layer``). ``recipe`` sets
    h, LVD and EM (its ``seq_len`` is set to ``sampling.num_tokens``); ``compare_random`` also trains a
    random-init HMM with the same budget.
    """

    model: str
    recipe: RecipeConfig
    num_samples: int = 10000
    heldout_samples: int = 1000
    sampling: SampleSettings = field(default_factory=SampleSettings)
    prompts: tuple[str, ...] | None = None
    teacher: str = "suffix"
    teacher_layer: int = -1
    compare_random: bool = False
    sample_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS} (suffix embeddings or the LM's hidden states), "
                             f"got {self.teacher!r}")
        for name in ("num_samples", "heldout_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.recipe.init == "lvd" and self.num_samples < self.recipe.num_states:
            raise ValueError(f"num_samples={self.num_samples} is below num_states={self.recipe.num_states}: "
                             "K-means needs at least one sample per cluster; draw more samples")
        object.__setattr__(self, "recipe", replace(self.recipe, seq_len=self.sampling.num_tokens))


@dataclass
class DistillLMResult:
    """The trained language models by init, and the report (held-out log-likelihoods per token)."""

    models: dict[str, LanguageModel]
    report: dict


def _samples(config: DistillLMConfig, model, tokenizer, log: Callable[[str], None]) -> tuple[WindowSplits, Tensor]:
    """The three splits of samples in the LM's tokenizer, and the LM's log-likelihood of each test sample [K]."""
    splits, log_probs = {}, {}
    for split, count in (("train", config.num_samples), ("valid", config.heldout_samples),
                         ("test", config.heldout_samples)):
        start = time.perf_counter()
        splits[split], log_probs[split] = lm_samples(model, tokenizer, count, config.sampling, config.prompts, split,
                                                     config.sample_cache_dir, config.recipe.progress)
        log(f"[samples] {split}: {count} x {config.sampling.num_tokens} tokens ({time.perf_counter() - start:.0f} s)")
    key = f"lm-samples:{config.model}:{asdict(config.sampling)}:{config.prompts}:{config.num_samples}"
    data = WindowSplits(splits["train"], splits["valid"], splits["test"], HFTokenizer(config.model), key=key,
                        source=str(config.model))
    return data, log_probs["test"]


def distill_lm(config: DistillLMConfig, directory: str | os.PathLike, resume: bool = False,
               log: Callable[[str], None] | None = None) -> DistillLMResult:
    """Sample the LM, distil and fine-tune the HMM(s), save them and ``results.json`` under ``directory``.

    One init is saved in ``directory``; with ``compare_random`` the LVD HMM goes to ``directory/lvd`` and the
    random-init one to ``directory/random``. ``resume=True`` continues sampling, the init and EM where a
    killed run stopped. Under ``torchrun`` every rank samples its shards and runs the recipe; rank 0 writes.
    """
    log = log or (lambda line: None)
    directory = Path(directory)
    model, tokenizer = load_causal_lm(config.model, config.recipe.device)
    data, test_log_probs = _samples(config, model, tokenizer, log)
    encoder = None
    if config.teacher == "hidden":
        begin = None if config.prompts else start_token(tokenizer)
        encoder = HiddenStateTeacher(model, tokenizer, config.teacher_layer, begin,
                                     batch_size=config.sampling.batch_size)
    inits = [config.recipe.init] + (["random"] if config.compare_random and config.recipe.init != "random" else [])
    lm_reference = float(test_log_probs.sum()) / test_log_probs.numel() / config.sampling.num_tokens
    report = {"model": config.model, "world_size": rank_and_world_size()[1], "teacher": config.teacher,
              "sampling": asdict(config.sampling), "num_samples": config.num_samples,
              "heldout_samples": config.heldout_samples, "lm_test_log_likelihood_per_token": lm_reference,
              "models": {}}
    models = {}
    for init in inits:
        out = directory if len(inits) == 1 else directory / init
        result = train(data, replace(config.recipe, init=init), out, resume=resume, log=log, encoder=encoder)
        final_test = next(row for row in result.perplexity if row["stage"] == "final" and row["split"] == "test")
        models[init] = LanguageModel(result.hmm, data.tokenizer)
        report["models"][init] = {
            "directory": str(out), "test_log_likelihood_per_token": -math.log(final_test["perplexity"]),
            "test_perplexity": final_test["perplexity"], "perplexity": result.perplexity,
            "history": result.history.as_dict(), "init_seconds": result.init_seconds,
            "em_epoch_seconds": result.em_epoch_seconds,
            "lvd_stats": result.lvd_stats.as_dict() if result.lvd_stats is not None else None}
        if is_main_process():
            models[init].save_pretrained(out)
    if is_main_process():
        atomic_write_json(directory / "results.json", report)
    return DistillLMResult(models, report)
