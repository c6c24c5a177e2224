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
# # Exact constrained generation with an HMM
#
# An HMM answers `p(constraint | prefix)` exactly when the constraint is a DFA over tokens (HMM × DFA).
# This notebook trains a word-level HMM on WikiText-2, scores texts, generates under keyword, phrase,
# banned-word and length constraints, checks the exact `p(constraint | prefix)` against how often
# unconstrained samples satisfy the constraint, and steers a `transformers` causal LM with the HMM.
#
# `HMMLVD_NOTEBOOK_SCALE=smoke` shrinks everything to a few seconds; `HMMLVD_DATA` points at WikiText-2.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("HMMLVD_NOTEBOOK_SCALE", "full")
DATA_DIR = os.environ.get("HMMLVD_DATA", "../../shared/data/wikitext-2")
SIZES = {"smoke": dict(num_states=16, train_windows=2000, epochs=1, samples=200),
         "full": dict(num_states=128, train_windows=None, epochs=3, samples=2000)}[SCALE]

# %%
import time

import matplotlib.pyplot as plt
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

import hmmlvd
from hmmlvd import HMM, HMMConfig, em
from hmmlvd.constraints import HMMConstraintLogitsProcessor
from hmmlvd.data import wikitext2, windows

torch.manual_seed(0)
corpus = wikitext2(DATA_DIR)
train = windows(corpus.train, length=32, stride=8)
if SIZES["train_windows"]:
    train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:SIZES["train_windows"]]]
print(f"{len(train):,} training windows of 32 tokens, vocabulary {corpus.tokenizer.vocab_size:,}")

# %% [markdown]
# ## Train an HMM
# A random-init HMM fine-tuned by the paper's two-phase mini-batch EM (notebook 01 shows what LVD adds).

# %%
start = time.perf_counter()
hmm = HMM.random(HMMConfig(num_states=SIZES["num_states"], vocab_size=corpus.tokenizer.vocab_size), seed=0)
history = em.fit(hmm, train, em.TwoPhase(SIZES["epochs"], 0.5, 1, 0.2), batch_size=8192, pseudocount=1.0,
                 progress=False)
lm = hmmlvd.LanguageModel(hmm, corpus.tokenizer)
print(f"h={hmm.num_states}: {time.perf_counter() - start:.0f} s of EM; train ll/window per epoch",
      [round(x, 1) for x in history.train_log_likelihood])

# %% [markdown]
# ## Scoring
# `score` gives every token's log-probability given its context (the sliding protocol past 32 tokens).

# %%
for text in ["the river flows into the sea", "the sea flows into the river", "river the into sea flows the"]:
    score = lm.score(text)[0]
    print(f"{score.total_log_prob:8.2f} nats  {text!r}")

# %% [markdown]
# ## Generation under constraints
# Every continuation satisfies its constraint; at temperature 1 they are exact samples of
# `p(continuation | prefix, constraint)`.

# %%
prefix, new_tokens = "the river", 12
constraints = {
    "keywords: the, of": lm.keywords(["the", "of"]),
    "phrase: 'of the'": lm.keywords(["of the"]),
    "banned: the, of, and": lm.banned(["the", "of", "and"]),
    "length: 4-8 words up to '.'": lm.length(4, 8, end_word="."),
}
for name, constraint in constraints.items():
    print(f"-- {name}")
    for text in lm.generate(prefix, max_new_tokens=new_tokens, constraint=constraint, num_samples=3, seed=0):
        print(f"   {prefix} | {text}")
    assert all(constraint.accepts(row) for row in lm.generate_ids(    # every continuation satisfies its constraint
        prefix, max_new_tokens=new_tokens, constraint=constraint, num_samples=3, seed=0))

# %% [markdown]
# ## Exact probability against the empirical satisfaction rate
# `constraint_log_prob` is exact. Unconstrained samples satisfy the constraint at a rate that should match it
# within the binomial error bars.

# %%
names, exact, empirical, errors = [], [], [], []
for name, constraint in constraints.items():
    p = lm.constraint_log_prob(prefix, constraint, new_tokens).exp().item()
    ids = lm.generate_ids(prefix, max_new_tokens=new_tokens, num_samples=SIZES["samples"], seed=1)
    rate = sum(constraint.accepts(row) for row in ids) / len(ids)
    names.append(name); exact.append(p); empirical.append(rate)
    errors.append(2 * (max(p * (1 - p), 1e-12) / len(ids)) ** 0.5)
    print(f"{name:30s} exact {p:.4f}   sampled {rate:.4f} ± {errors[-1]:.4f} (2 s.e., {len(ids)} samples)")
    assert 0 <= p <= 1 and abs(rate - p) <= 2 * errors[-1] + 1 / len(ids), (name, p, rate)   # within 4 s.e.

fig, ax = plt.subplots(figsize=(6, 3))
positions = range(len(names))
ax.bar([i - 0.2 for i in positions], exact, width=0.4, label="exact p(constraint | prefix)")
ax.bar([i + 0.2 for i in positions], empirical, width=0.4, yerr=errors, label="unconstrained samples")
ax.set_xticks(list(positions), names, rotation=20, ha="right", fontsize=8)
ax.set_ylabel("probability"); ax.legend(fontsize=8); fig.tight_layout()

# %% [markdown]
# ## Steering a causal LM
# `HMMConstraintLogitsProcessor` adds `log p_HMM(constraint | x_≤t) − log p_HMM(constraint | x_<t)` to a
# `transformers` model's scores. Offline we build a small GPT-2 from a config over the HMM's vocabulary
# (untrained, so its text is noise); every continuation still satisfies the constraint.

# %%
base = GPT2LMHeadModel(GPT2Config(vocab_size=hmm.vocab_size, n_embd=64, n_layer=2, n_head=2, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
prompt = torch.tensor([lm.encode(prefix)])
constraint = lm.keywords(["river", "bank"])
processor = HMMConstraintLogitsProcessor(hmm, constraint, prompt_length=prompt.shape[1],
                                         max_new_tokens=new_tokens, context_tokens=prompt.shape[1])
with torch.no_grad():
    out = base.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                        num_return_sequences=3, logits_processor=LogitsProcessorList([processor]))
for row in out[:, prompt.shape[1]:].tolist():
    print(constraint.accepts(row), "|", lm.decode(row))
    assert constraint.accepts(row)                                          # the steered LM satisfies it too
