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
# # Hidden Chow–Liu trees on the DEBD binary benchmarks
#
# `hmmlvd.pc.structures.hclt(data, k)` learns a Chow–Liu tree over the variables and hangs a hidden categorical of
# size k on every variable. `pc.train_hclt` trains it by mini-batch EM (step size annealed linearly) and then a few
# full-batch epochs, keeping the parameters of the best validation epoch; the `fixed` preset is one trial (k = 32,
# pseudocount 0.01) where the default searches hidden sizes and regularisation on valid. Test log-likelihoods are
# set beside the published HCLT and EinsumNetworks figures from the DEBD README.
#
# `HMMLVD_NOTEBOOK_SCALE=smoke` shrinks it to seconds; `HMMLVD_DEBD` points at the DEBD folder.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("HMMLVD_NOTEBOOK_SCALE", "full")
DEBD_DIR = os.environ.get("HMMLVD_DEBD", "../../shared/data/debd")
SIZES = {"smoke": dict(datasets=["nltcs"], rows=500, num_latents=4, minibatch_epochs=2, fullbatch_epochs=1),
         "full": dict(datasets=["nltcs", "plants", "baudio", "jester", "bnetflix"], rows=None, num_latents=32,
                      minibatch_epochs=60, fullbatch_epochs=5)}[SCALE]
PUBLISHED = {"nltcs": (-6.00, -6.09), "plants": (-14.26, -15.29), "baudio": (-39.77, -40.89),
             "jester": (-52.46, -53.41), "bnetflix": (-56.28, None)}          # (HCLT, EinsumNetworks)

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt

from hmmlvd import em, pc
from hmmlvd.data import load_debd
from hmmlvd.pc.recipe import PRESETS

recipe = replace(PRESETS["fixed"], hidden_sizes=(SIZES["num_latents"],), minibatch_epochs=SIZES["minibatch_epochs"],
                 fullbatch_epochs=SIZES["fullbatch_epochs"])
results, curves = {}, {}
for name in SIZES["datasets"]:
    data = {split: rows[:SIZES["rows"]] for split, rows in load_debd(name, DEBD_DIR).items()}
    start = time.perf_counter()
    trained = pc.train_hclt(data["train"], data["valid"], recipe, progress=False)
    seconds = time.perf_counter() - start
    circuit, trial = trained.circuit, trained.trials[0]
    curves[name] = trial.valid_curves["mini-batch"] + trial.valid_curves.get("full-batch", [])
    test = em.mean_log_likelihood(circuit, data["test"], 4096, circuit.device)
    assert abs(em.mean_log_likelihood(circuit, data["valid"], 4096, circuit.device) - max(curves[name])) < 1e-4
    results[name] = (test, seconds, circuit.num_parameters)
    print(f"{name:9s} test LL {test:8.3f}  ({seconds:.0f} s, {circuit.num_parameters:,} parameters, "
          f"best epoch: {trained.best_epoch})")

# %%
print(f"{'dataset':9s} {'ours':>8} {'HCLT':>8} {'diff':>7} {'EiNet':>8}")
for name, (test, seconds, parameters) in results.items():
    hclt_ll, einet = PUBLISHED[name]
    print(f"{name:9s} {test:8.3f} {hclt_ll:8.2f} {test - hclt_ll:+7.3f} {einet if einet else '-':>8}")

# %% [markdown]
# ## Training curves
# Validation log-likelihood per example after every epoch: the mini-batch epochs, then the full-batch ones.

# %%
fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.8), squeeze=False)
for axis, (name, curve) in zip(axes[0], curves.items()):
    axis.plot(range(1, len(curve) + 1), curve)
    axis.axvline(SIZES["minibatch_epochs"] + 0.5, color="grey", linestyle=":")
    axis.axhline(PUBLISHED[name][0], color="red", linestyle="--", label="published HCLT")
    axis.set_title(name); axis.set_xlabel("epoch")
axes[0, 0].set_ylabel("valid LL per example"); axes[0, 0].legend(fontsize=7); fig.tight_layout()
