"""Keyword-constrained generation (CommonGen-style) with a base causal LM, steered by distilled HMMs, against
the usual baselines, on concept sets drawn from WikiText-2 test sentences.

Each example is a set of 2-4 content words from one test sentence; the task is a ``--max-new-tokens``
continuation of the LM's start token that contains every word (a word counts when it appears at the start of a
word, so inflections like "rivers" count). Methods, each given at most ``--budget`` seconds per example:

* ``unconstrained``: one sample of the base LM;
* ``rejection``: samples of the base LM in batches of ``--batch``, the first that satisfies, until the budget;
* ``boost``: samples with every missing keyword's tokens boosted by ``--boost`` nats, until one satisfies or the
  budget ends;
* ``transformers``: ``model.generate(force_words_ids=...)`` (constrained beam search) when the installed
  transformers still ships it;
* ``hmm_alone``: a sample of the LVD HMM under the constraint (exact, HMM x DFA);
* ``steered_lvd`` / ``steered_random``: the base LM steered by the LVD / random-init HMM (one sample).

Reported per method: success rate, the base LM's perplexity of the outputs, distinct-2 (word bigrams) and
seconds per example. Fluency of the two steered LMs is then compared on ``--fluency-samples`` more samples per
example from each (untimed): the base LM's perplexity of all of them, and a paired bootstrap over the examples of
the ratio LVD / random (95 % interval), so a 1 % difference is not read off one sample per example.

    flock /tmp/hmmlvd-cpu.lock python bench/steering.py --base-lm runs/base-lm --hmm runs/steer-hmm \\
        --data-dir DATA --num-examples 200 --out bench/results/steering.json
"""
from __future__ import annotations

import argparse
import math
import random
import re
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

import hmmlvd
from hmmlvd.data import read_lines
from hmmlvd.io import atomic_write_json
from hmmlvd.lvd.causal_lm import load_causal_lm
from hmmlvd.steer import generate_steered

STOPWORDS = set("""the a an and or but of to in on at by for with from as is are was were be been being it its this
that these those he she they them his her their we you i not no had has have which who whom whose what when where
while also after before into over under about than then there here such other more most some any all each only
first second one two three four five six seven eight nine ten during between through against would could should
will shall may might can did does done made make many much very well new old de le la""".split())


def concept_sets(lines: list[str], tokenizer, num_sets: int, seed: int) -> list[list[str]]:
    """``num_sets`` sets of 2-4 distinct content words (alphabetic, >= 4 letters, not stop words, at most two
    BPE tokens as a spaced word) from randomly chosen WikiText-2 test sentences."""
    rng = random.Random(seed)
    sentences = [s for line in lines for s in line.split(" . ") if len(s.split()) >= 8]
    rng.shuffle(sentences)
    sets = []
    for sentence in sentences:
        words = [w for w in dict.fromkeys(sentence.split()) if w.isalpha() and w.islower() and len(w) >= 4
                 and w not in STOPWORDS and len(tokenizer.encode(" " + w, add_special_tokens=False)) <= 2]
        size = 2 + len(sets) % 3
        if len(words) >= size:
            sets.append(rng.sample(words, size))
        if len(sets) == num_sets:
            break
    return sets


def satisfied(text: str, words: list[str]) -> bool:
    return all(re.search(r"(?<![A-Za-z])" + re.escape(word), text) for word in words)


def sample(model, start: int, count: int, length: int, processors=None) -> list[list[int]]:
    inputs = torch.full((count, 1), start, dtype=torch.long)
    out = model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=True, top_k=0,
                         max_new_tokens=length, min_new_tokens=length, pad_token_id=start,
                         logits_processor=processors or LogitsProcessorList())
    return out[:, 1:].tolist()


class KeywordBoost(LogitsProcessor):
    """Adds ``boost`` to the first token of every keyword (a token sequence) not yet in the generated text."""

    def __init__(self, phrases: list[list[int]], boost: float):
        self.phrases, self.boost = phrases, boost

    def __call__(self, input_ids, scores):
        for row, ids in enumerate(input_ids.tolist()):
            for phrase in self.phrases:
                if not any(ids[i:i + len(phrase)] == phrase for i in range(len(ids) - len(phrase) + 1)):
                    scores[row, phrase[0]] += self.boost
        return scores


def until_satisfied(draw, words, tokenizer, budget: float) -> list[int]:
    """Draw batches until a continuation satisfies or the budget is spent; that one, else the last drawn."""
    start, last = time.perf_counter(), None
    while True:
        for row in draw():
            last = row
            if satisfied(tokenizer.decode(row), words):
                return row
        if time.perf_counter() - start >= budget:
            return last


def run_method(name, words, args, model, tokenizer, lms, start) -> list[int]:
    """The one continuation (token ids) that method ``name`` gives for the concept set ``words``."""
    length = args.max_new_tokens
    if name == "unconstrained":
        return sample(model, start, 1, length)[0]
    if name == "rejection":
        return until_satisfied(lambda: sample(model, start, args.batch, length), words, tokenizer, args.budget)
    if name == "boost":
        phrases = [tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
        processors = LogitsProcessorList([KeywordBoost(phrases, args.boost)])
        return until_satisfied(lambda: sample(model, start, args.batch, length, processors), words, tokenizer,
                               args.budget)
    if name == "transformers":
        phrases = [tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
        inputs = torch.full((1, 1), start, dtype=torch.long)
        out = model.generate(inputs, force_words_ids=phrases, num_beams=4, max_new_tokens=length,
                             min_new_tokens=length, pad_token_id=start)
        return out[0, 1:].tolist()
    lm = lms["lvd" if name in ("hmm_alone", "steered_lvd") else "random"]
    constraint = lm.concepts([[w] for w in words])
    if name == "hmm_alone":
        return lm.generate_ids("", length, constraint=constraint)[0]
    return generate_steered(model, tokenizer, lm, "", constraint, length)[0]


def lm_log_likelihoods(model, start: int, rows: list[list[int]]) -> torch.Tensor:
    """log p_LM(row | start token) per row, float64 [len(rows)]."""
    ids = torch.tensor([[start] + row for row in rows])
    parts = []
    with torch.no_grad():
        for batch in ids.split(64):
            logits = model(batch).logits[:, :-1].double()
            parts.append(torch.log_softmax(logits, -1).gather(2, batch[:, 1:, None]).sum(dim=(1, 2)))
    return torch.cat(parts)


def compare_fluency(model, tokenizer, lms, examples, args, start) -> dict:
    """The base LM's perplexity of ``--fluency-samples`` steered samples per example from each HMM, and a paired
    bootstrap (over examples, 2,000 resamples) of the perplexity ratio LVD / random."""
    per_example, report = {}, {"samples_per_example": args.fluency_samples}
    for init in ("lvd", "random"):
        torch.manual_seed(args.seed + 1)
        rows = [generate_steered(model, tokenizer, lms[init], "", lms[init].concepts([[w] for w in words]),
                                 args.max_new_tokens, num_samples=args.fluency_samples) for words in examples]
        flat = [row for group in rows for row in group]
        texts = [tokenizer.decode(row) for row in flat]
        words = [w for w in examples for _ in range(args.fluency_samples)]
        per_example[init] = -lm_log_likelihoods(model, start, flat).view(len(examples), -1).sum(dim=1)
        report[init] = {"perplexity": math.exp(float(per_example[init].sum()) / (len(flat) * args.max_new_tokens)),
                        "success": sum(map(satisfied, texts, words)) / len(texts), "distinct_2": distinct_2(texts)}
    generator = torch.Generator().manual_seed(args.seed)
    draws = torch.randint(0, len(examples), (2000, len(examples)), generator=generator)
    tokens = len(examples) * args.fluency_samples * args.max_new_tokens
    ratios = ((per_example["lvd"][draws].sum(1) - per_example["random"][draws].sum(1)) / tokens).exp()
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype)).tolist()
    report["ratio_lvd_over_random"] = {"estimate": report["lvd"]["perplexity"] / report["random"]["perplexity"],
                                       "ci95": [low, high]}
    return report


def distinct_2(texts: list[str]) -> float:
    bigrams = [tuple(words[i:i + 2]) for words in (t.split() for t in texts) for i in range(len(words) - 1)]
    return len(set(bigrams)) / max(1, len(bigrams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-lm", required=True)
    parser.add_argument("--hmm", type=Path, required=True, help="distill-lm output with lvd/ and random/")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--num-examples", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per example for the retrying methods")
    parser.add_argument("--batch", type=int, default=8, help="samples per try of rejection and boost")
    parser.add_argument("--boost", type=float, default=4.0)
    parser.add_argument("--methods", default="unconstrained,rejection,boost,transformers,hmm_alone,steered_lvd,"
                                             "steered_random")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fluency-samples", type=int, default=4,
                        help="more steered samples per example for the LVD vs random fluency comparison (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/steering.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.base_lm, "cpu")
    lms = {init: hmmlvd.load(args.hmm / init) for init in ("lvd", "random")}
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    examples = concept_sets(read_lines(args.data_dir)[0]["test"], tokenizer, args.num_examples, args.seed)
    results = {"config": {k: str(v) for k, v in vars(args).items()}, "num_examples": len(examples),
               "examples": examples, "methods": {}, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in args.methods.split(","):
        torch.manual_seed(args.seed)
        rows, seconds = [], 0.0
        try:
            for words in examples:
                begin = time.perf_counter()
                rows.append(run_method(name, words, args, model, tokenizer, lms, start))
                seconds += time.perf_counter() - begin
        except (ValueError, TypeError, NotImplementedError, AttributeError) as error:
            results["methods"][name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"{name:>15}: not available ({type(error).__name__}: {str(error)[:200]})", flush=True)
            continue
        texts = [tokenizer.decode(row) for row in rows]
        row = {"success": sum(satisfied(t, w) for t, w in zip(texts, examples)) / len(examples),
               "perplexity": math.exp(-float(lm_log_likelihoods(model, start, rows).sum()) / sum(map(len, rows))),
               "distinct_2": distinct_2(texts), "seconds_per_example": seconds / len(examples),
               "samples": [{"words": w, "text": t} for w, t in zip(examples[:5], texts[:5])]}
        results["methods"][name] = row
        print(f"{name:>15}: success {row['success']:6.1%}  perplexity {row['perplexity']:8.2f}  "
              f"distinct-2 {row['distinct_2']:.3f}  {row['seconds_per_example']:.3f} s/example", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, results)
    if args.fluency_samples > 0:
        fluency = results["fluency"] = compare_fluency(model, tokenizer, lms, examples, args, start)
        ratio = fluency["ratio_lvd_over_random"]
        print(f"fluency over {args.fluency_samples} steered samples per example: perplexity LVD "
              f"{fluency['lvd']['perplexity']:.2f}, random {fluency['random']['perplexity']:.2f}, ratio "
              f"{ratio['estimate']:.3f} (95 % interval {ratio['ci95'][0]:.3f}-{ratio['ci95'][1]:.3f})", flush=True)
        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
