"""Steer a transformers causal LM with a distilled HMM (Ctrl-G / GeLaTo): ``model.generate`` under an exact
HMM x DFA guide (:class:`~hmmlvd.constraints.HMMConstraintLogitsProcessor`), by sampling, greedy or beam search.

The HMM must share the base model's tokenizer (``hmmlvd distill-lm`` makes one). It reads the last prompt
tokens that fit in its window beside the ``max_new_tokens`` generated ones; the constraint applies to the
generated tokens, exactly ``max_new_tokens`` of them (the base model's end-of-text token is held back until
then).
"""
from __future__ import annotations

import torch

from .constraints import DFA
from .lm import LanguageModel

DECODINGS = ("sample", "greedy", "beam")


def check_same_tokenizer(lm: LanguageModel, tokenizer) -> None:
    """A ValueError unless the HMM's tokenizer is the base model's (same vocabulary, same ids)."""
    own = getattr(lm.tokenizer, "_tokenizer", None)
    if own is None or not hasattr(own, "get_vocab"):
        raise ValueError(f"the HMM's tokenizer ({lm.tokenizer!r}) is not a Hugging Face tokenizer, so it cannot be "
                         "the base model's; distil an HMM from the base model with hmmlvd distill-lm")
    if len(own) != len(tokenizer) or own.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"the HMM's vocabulary ({len(own)} tokens) differs from the base model's tokenizer "
                         f"({len(tokenizer)} tokens); the HMM must be trained on the base model's own samples "
                         "(hmmlvd distill-lm BASE_MODEL)")


def _start_ids(tokenizer, prompt: str) -> tuple[list[int], int]:
    """The ids the base model reads (its BOS/EOS start token, then the prompt) and how many are prompt text."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    text = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    ids = ([start] if start is not None else []) + text
    if not ids:
        raise ValueError("the base model's tokenizer has no BOS or EOS token to start from; give a --prompt")
    return ids, len(text)


def generate_steered(model, tokenizer, lm: LanguageModel, prompt: str, constraint: DFA | None, max_new_tokens: int,
                     decoding: str = "sample", num_samples: int = 1, num_beams: int = 4, temperature: float = 1.0,
                     top_k: int | None = None, seed: int | None = None) -> list[list[int]]:
    """``num_samples`` continuations (token ids, ``max_new_tokens`` each) of ``prompt`` by the base ``model``,
    guided by ``lm``'s HMM towards ``constraint`` (None: the base model alone, for comparison).

    ``decoding``: ``"sample"`` (at ``temperature``, top-k off unless ``top_k``; at temperature 1 the samples
    follow ``p_LM(x) p_HMM(constraint | x)`` normalised per token, which is ``p(x | constraint)`` when the HMM
    is the model itself), ``"greedy"`` or ``"beam"`` (``num_beams`` beams, the best ``num_samples``).
    """
    from transformers import LogitsProcessorList

    from .constraints import HMMConstraintLogitsProcessor

    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    for name, value in (("max_new_tokens", max_new_tokens), ("num_samples", num_samples), ("num_beams", num_beams)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if decoding == "beam" and num_samples > num_beams:
        raise ValueError(f"beam search returns at most num_beams={num_beams} sequences; ask for --num-samples "
                         f"<= --num-beams, got {num_samples}")
    if decoding == "greedy" and num_samples > 1:
        raise ValueError("greedy decoding gives one continuation; use --num-samples 1, or sampling / beam search")
    check_same_tokenizer(lm, tokenizer)
    window = lm.window
    if window is not None and max_new_tokens > window:
        raise ValueError(f"cannot constrain {max_new_tokens} new tokens: the HMM window holds {window} tokens; ask "
                         f"for at most {window} new tokens (or distil an HMM with a longer --num-tokens)")
    ids, text_length = _start_ids(tokenizer, prompt)
    context = min(text_length, (window - max_new_tokens) if window is not None else text_length)
    processors = LogitsProcessorList()
    if constraint is not None:
        processors.append(HMMConstraintLogitsProcessor(lm.hmm, constraint, prompt_length=len(ids),
                                                       max_new_tokens=max_new_tokens, context_tokens=context))
    device = next(model.parameters()).device
    inputs = torch.tensor([ids], device=device).expand(1 if decoding == "beam" else num_samples, -1)
    options = {"sample": {"do_sample": True, "temperature": temperature, "top_k": top_k or 0},
               "greedy": {"do_sample": False},
               "beam": {"do_sample": False, "num_beams": num_beams, "num_return_sequences": num_samples}}[decoding]
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, logits_processor=processors,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                             **options)
    return out[:, len(ids):].tolist()
