#!/bin/bash
# The steering study of bench/RESULTS.md: distil h = 256 and h = 1024 HMMs (LVD and random init, same EM budget)
# from 80,000 samples of the base LM of bench/train_base_lm.py, EM on batches of 16,384 sequences (the recipe's
# default), then bench/steering.py for each size (only the HMM methods). Earlier figures in bench/RESULTS.md used
# SAMPLES=20000 BATCH=2048 (second session of 2026-12-04) and SAMPLES=80000 BATCH=2048 (third session).
#   HMMLVD_DATA=../shared/data/wikitext-2 flock /tmp/hmmlvd-cpu.lock bash bench/steering_study.sh [RUNS_DIR]
set -euo pipefail
R=${1:-runs}
N=${SAMPLES:-80000}
B=${BATCH:-16384}
D=${HMMLVD_DATA:?set HMMLVD_DATA to the WikiText-2 folder}
for H in 256 1024; do
  python -m hmmlvd distill-lm "$R/base-lm" --out "$R/steer-hmm-$H-n$N-b$B" --num-samples "$N" --heldout-samples 1000 \
    --num-tokens 32 --teacher hidden --num-states $H --lvd-windows 0 --phase1-epochs 3 --phase2-epochs 1 \
    --batch-size "$B" --compare-random --sample-batch-size 128 --device cpu --sample-cache-dir "$R/sample-cache" \
    --cache-dir "$R/cache" --no-progress
  cp "$R/steer-hmm-$H-n$N-b$B/results.json" "bench/results/steering_distill_n${N}_b${B}_h$H.json"
  python bench/steering.py --base-lm "$R/base-lm" --hmm "$R/steer-hmm-$H-n$N-b$B" --data-dir "$D" --num-examples 200 \
    --budget 1.0 --threads 1 --methods hmm_alone,steered_lvd,steered_random \
    --out "bench/results/steering_n${N}_b${B}_h$H.json"
done
# The baselines (unconstrained, rejection sampling, keyword boost) do not depend on the HMM; bench/steering.py
# without --methods runs them too (bench/results/steering.json).
