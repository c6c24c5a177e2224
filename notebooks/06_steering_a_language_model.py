# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Steering a language model with a distilled HMM
#
# GeLaTo and Ctrl-G make a causal language model satisfy logical constraints: sample sequences from the LM,
# distil an HMM from those samples (LVD init, then EM), and at generation time add the HMM's exact
# `log p(constraint | prefix, next token)` to the LM's next-token scores. This notebook runs that workflow end
# to end: it trains a small GPT-2 on WikiText-2 (no pretrained model is reachable offline; any `transformers`
# causal LM works the same way), distils HMMs from it with `hmmlvd.lvd.lm_recipe.distill_lm` (what
# `hmmlvd distill-lm` runs), and asks for continuations that contain given keywords.
#
# `HMMLVD_NOTEBOOK_SCALE=smoke` shrinks everything to under a minute; `HMMLVD_DATA` points at WikiText-2.
# The full-size benchmark (a 4.2M-parameter GPT-2 trained for 24 minutes, HMMs with h = 256, 200 keyword sets)
# is `bench/steering.py`, recorded in `bench/RESULTS.md`.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("HMMLVD_NOTEBOOK_SCALE", "full")
DATA_DIR = os.environ.get("HMMLVD_DATA", "../../shared/data/wikitext-2")
SIZES = {"smoke": dict(lines=3000, vocab=512, width=64, layers=2, steps=150, samples=768, states=16,
                       examples=12),
         "full": dict(lines=None, vocab=2048, width=128, layers=2, steps=1500, samples=8192, states=64,
                      examples=50)}[SCALE]

# %%
import math
import re
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from tokenizers import ByteLevelBPETokenizer

import hmmlvd
from hmmlvd.data import read_lines
from hmmlvd.data.lm_samples import SampleSettings
from hmmlvd.lvd.lm_recipe import DistillLMConfig, distill_lm
from hmmlvd.lvd.recipe import RecipeConfig
from hmmlvd.steer import generate_steered

torch.manual_seed(0)
lines = read_lines(DATA_DIR)[0]
train_lines = [line.strip() for line in lines["train"][:SIZES["lines"]] if line.strip()]
work = Path(tempfile.mkdtemp(prefix="hmmlvd-steer-"))

# %% [markdown]
# ## A base language model
# A byte-level BPE tokenizer and a small GPT-2, trained on WikiText-2 with `transformers`.

# %%
bpe = ByteLevelBPETokenizer()
bpe.train_from_iterator(train_lines, vocab_size=SIZES["vocab"], special_tokens=["<|endoftext|>"],
                        show_progress=False)
tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                    bos_token="<|endoftext|>", pad_token="<|endoftext|>")
stream = torch.tensor([i for line in train_lines for i in tokenizer.encode(line) + [tokenizer.eos_token_id]])
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=SIZES["width"],
                                   n_layer=SIZES["layers"], n_head=2, bos_token_id=0, eos_token_id=0))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
start = time.perf_counter()
for step in range(SIZES["steps"]):
    offsets = torch.randint(0, len(stream) - 64, (32,))
    batch = stream[offsets[:, None] + torch.arange(64)]
    loss = model(batch, labels=batch).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval().save_pretrained(work / "base-lm")
tokenizer.save_pretrained(work / "base-lm")
print(f"GPT-2 with {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {SIZES['steps']} steps "
      f"in {time.perf_counter() - start:.0f} s; last training loss {loss.item():.2f} nats/token")

# %% [markdown]
# ## Distil HMMs from the model's samples
# `distill_lm` draws samples (cached in shards, resumable), distils an HMM with the LM's own hidden states as
# the teacher, fine-tunes it by EM and trains a random-init HMM with the same budget beside it. The held-out
# log-likelihood per token of both HMMs is printed next to the LM's own.

# %%
recipe = RecipeConfig.preset("quick", num_states=SIZES["states"], lvd_windows=0, phase1_epochs=2, phase2_epochs=1,
                             batch_size=512, eval_splits="valid,test", eval_protocols="chunk", progress=False,
                             device="cpu", kmeans_backend="torch", cache_dir=str(work / "cache"))
config = DistillLMConfig(str(work / "base-lm"), recipe, num_samples=SIZES["samples"], heldout_samples=256,
                         sampling=SampleSettings(num_tokens=32, shard_size=256, batch_size=128), teacher="hidden",
                         compare_random=True, sample_cache_dir=str(work / "samples"))
start = time.perf_counter()
result = distill_lm(config, work / "hmm")
report = result.report
print(f"{time.perf_counter() - start:.0f} s; held-out log-likelihood per token: "
      f"LM {report['lm_test_log_likelihood_per_token']:.3f}, "
      + ", ".join(f"HMM {init} {row['test_log_likelihood_per_token']:.3f}" for init, row in report["models"].items()))

# %% [markdown]
# ## Keyword-constrained generation
# Sets of 2-3 content words from WikiText-2 test sentences; 32-token continuations must contain every word.
# Unconstrained samples of the LM almost never do; the HMM-steered LM always does, because the guide sends
# every token that would make the constraint unsatisfiable to probability 0.

# %%
sentences = [s.split() for line in lines["test"] for s in line.split(" . ") if len(s.split()) >= 8]
examples = []
for words in sentences:
    content = [w for w in dict.fromkeys(words) if w.isalpha() and w.islower() and len(w) >= 5]
    if len(content) >= 3:
        examples.append(content[:2 + len(examples) % 2])
    if len(examples) == SIZES["examples"]:
        break


def satisfied(text, words):
    return all(re.search(r"(?<![A-Za-z])" + re.escape(w), text) for w in words)


def lm_perplexity(rows):
    ids = torch.tensor([[0] + row for row in rows])
    with torch.no_grad():
        logits = model(ids).logits[:, :-1].double()
    return math.exp(-torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).mean().item())


outputs = {}
for name in ("unconstrained", "steered_lvd", "steered_random"):
    torch.manual_seed(0)
    start, rows = time.perf_counter(), []
    for words in examples:
        lm = result.models["lvd" if name != "steered_random" else "random"]
        constraint = None if name == "unconstrained" else lm.concepts([[w] for w in words])
        rows.append(generate_steered(model, tokenizer, lm, "", constraint, 32)[0])
    texts = [tokenizer.decode(row) for row in rows]
    outputs[name] = dict(success=sum(map(satisfied, texts, examples)) / len(examples), perplexity=lm_perplexity(rows),
                         seconds=(time.perf_counter() - start) / len(examples), texts=texts)
    print(f"{name:>15}: success {outputs[name]['success']:6.1%}, base-LM perplexity "
          f"{outputs[name]['perplexity']:8.1f}, {outputs[name]['seconds']:.2f} s/example")
for words, text in list(zip(examples, outputs["steered_lvd"]["texts"]))[:3]:
    print(words, "->", repr(text))

# %% [markdown]
# The claims that hold at any size: every steered continuation contains every keyword, with either HMM.
# Fluency (perplexity within 1.5x of unconstrained, LVD at least as fluent as random init) is measured at full
# size in `bench/RESULTS.md`; at smoke size the HMMs are too small for it to be meaningful.

# %%
assert outputs["steered_lvd"]["success"] == 1.0 and outputs["steered_random"]["success"] == 1.0
assert outputs["unconstrained"]["success"] < 1.0
