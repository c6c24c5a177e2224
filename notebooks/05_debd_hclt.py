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
# size k on every variable; the circuit is trained by mini-batch EM (step size annealed linearly) and then a few
# full-batch epochs, keeping the parameters of the best validation epoch. Test log-likelihoods are set beside the
# published HCLT and EinsumNetworks figures from the DEBD README.
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

import matplotlib.pyplot as plt
import torch

from hmmlvd import em, pc
from hmmlvd.data import load_debd

torch.manual_seed(0)


def train_hclt(data, num_latents, minibatch_epochs, fullbatch_epochs):
    """Mini-batch then full-batch EM; returns the circuit at its best validation epoch and the valid curve."""
    circuit = pc.Circuit(pc.structures.hclt(data["train"], num_latents), seed=0)
    best, curve = {"valid": -float("inf")}, []

    def keep_best(epoch, history):
        curve.append(history.valid_log_likelihood[-1])
        if curve[-1] > best["valid"]:
            best.update(valid=curve[-1], params={k: g.values.clone() for k, g in circuit.parameter_groups().items()})

    common = dict(pseudocount=0.01, valid=data["valid"], progress=False, on_epoch_end=keep_best)
    em.fit(circuit, data["train"], em.LinearAnneal(0.5, 0.02, minibatch_epochs), batch_size=256, **common)
    em.fit(circuit, data["train"], em.Constant(1.0, fullbatch_epochs), batch_size=512, full_batch=True, **common)
    circuit.set_parameters(best["params"])
    return circuit, curve


results, curves = {}, {}
for name in SIZES["datasets"]:
    data = {split: rows[:SIZES["rows"]] for split, rows in load_debd(name, DEBD_DIR).items()}
    start = time.perf_counter()
    circuit, curves[name] = train_hclt(data, SIZES["num_latents"], SIZES["minibatch_epochs"],
                                       SIZES["fullbatch_epochs"])
    seconds = time.perf_counter() - start
    test = em.mean_log_likelihood(circuit, data["test"], 4096, circuit.device)
    results[name] = (test, seconds, circuit.num_parameters)
    print(f"{name:9s} test LL {test:8.3f}  ({seconds:.0f} s, {circuit.num_parameters:,} parameters)")

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
