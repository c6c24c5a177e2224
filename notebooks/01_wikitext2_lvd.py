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
# # Latent variable distillation for an HMM language model (WikiText-2)
#
# LVD (Liu et al., 2023) reads the hidden states of an HMM off a neural teacher: BERT-style embeddings of every
# suffix of a 32-token window are clustered per position, and the HMM is fitted to the completed data in closed
# form. EM then fine-tunes it. This notebook trains LVD and random-init HMMs with **the same EM budget**, reports
# perplexity under both protocols, plots the valid log-likelihood per epoch and test perplexity against h, and
# shows next-token distributions.
#
# `HMMLVD_NOTEBOOK_SCALE=smoke` shrinks everything to seconds; `HMMLVD_DATA` points at WikiText-2.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("HMMLVD_NOTEBOOK_SCALE", "full")
DATA_DIR = os.environ.get("HMMLVD_DATA", "../../shared/data/wikitext-2")
SIZES = {"smoke": dict(hidden=(8, 16), lvd_windows=64, train_windows=1000, epochs=(1, 1), sliding_tokens=500),
         "full": dict(hidden=(64, 128, 256), lvd_windows=2048, train_windows=65536, epochs=(3, 1),
                      sliding_tokens=20000)}[SCALE]

# %%
import time

import matplotlib.pyplot as plt
import torch

import hmmlvd
from hmmlvd import em
from hmmlvd.data import wikitext2
from hmmlvd.lvd import DistillConfig
from hmmlvd.lvd.recipe import RecipeConfig, train

corpus = wikitext2(DATA_DIR)
print({split: len(corpus.split(split)) for split in ("train", "valid", "test")}, "tokens;",
      f"vocabulary {corpus.tokenizer.vocab_size:,}")

# %% [markdown]
# ## LVD against random init, same EM budget
# For every h: LVD distils from a seeded subsample of training windows (MiniLM suffix embeddings → per-position
# K-means → closed-form fit); random init draws the tables. Both then get the same two-phase mini-batch EM on
# overlapping windows (stride 8; a seeded subsample of them at the default size). Perplexity is reported under
# the `chunk` protocol (disjoint 32-token windows)
# and the `sliding` protocol (each token given the previous ≤ 31; on the first test tokens here, to save time).

# %%
runs = {}
for hidden in SIZES["hidden"]:
    for init in ("lvd", "random"):
        config = RecipeConfig(
            DistillConfig(hidden, SIZES["lvd_windows"], pseudocount=10.0), init=init,
            schedule=em.TwoPhase(SIZES["epochs"][0], 0.5, SIZES["epochs"][1], 0.2), batch_size=16384,
            pseudocount=1.0, train_stride=8, train_windows=SIZES["train_windows"], eval_splits=("test",),
            sliding_max_tokens=SIZES["sliding_tokens"], checkpoints=False, progress=False)
        start = time.perf_counter()
        runs[hidden, init] = train(corpus, config)
        print(f"h={hidden:4d} {init:6s}: {time.perf_counter() - start:5.0f} s")
    assert len({len(runs[hidden, i].history.valid_log_likelihood) for i in ("lvd", "random")}) == 1   # same budget

# %%
print(f"{'h':>5} {'init':>7} {'params':>11} {'chunk ppl':>10} {'sliding ppl':>12}")
final = {}
for (hidden, init), result in runs.items():
    rows = {row["protocol"]: row["perplexity"] for row in result.perplexity if row["stage"] == "final"}
    final[hidden, init] = rows
    print(f"{hidden:5d} {init:>7} {result.hmm.num_parameters():11,d} {rows['chunk']:10.1f} {rows['sliding']:12.1f}")
    assert all(1 < rows[p] < corpus.tokenizer.vocab_size for p in ("chunk", "sliding")), rows   # beats uniform

# %% [markdown]
# ## Learning curves and scaling
# Valid log-likelihood per window after each EM epoch (epoch 0 is the init), and test perplexity against h.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for (hidden, init), result in runs.items():
    curve = [result.init_valid_log_likelihood] + result.history.valid_log_likelihood
    left.plot(range(len(curve)), curve, marker="o", linestyle="-" if init == "lvd" else "--",
              label=f"h={hidden} {init}")
left.set_xlabel("EM epoch"); left.set_ylabel("valid log-likelihood per window"); left.legend(fontsize=8)
for init in ("lvd", "random"):
    right.plot(SIZES["hidden"], [final[h, init]["sliding"] for h in SIZES["hidden"]], marker="o", label=init)
right.set_xscale("log", base=2); right.set_xlabel("hidden states h")
right.set_ylabel("test perplexity (sliding)"); right.legend(); fig.tight_layout()

# %% [markdown]
# ## Next-token distributions
# The ten likeliest next words after a prefix, for the largest LVD and random HMMs.

# %%
largest = max(SIZES["hidden"])
for init in ("lvd", "random"):
    lm = hmmlvd.LanguageModel(runs[largest, init].hmm, corpus.tokenizer)
    for prefix in ("the river", "in the united"):
        top = lm.next_token_logprobs(prefix).exp().topk(10)
        assert abs(lm.next_token_logprobs(prefix).exp().sum().item() - 1) < 1e-4   # a distribution over the vocabulary
        words = ", ".join(f"{lm.decode([i])} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{init:6s} {prefix!r}: {words}")
