#!/bin/bash
# The steering study of bench/RESULTS.md: distil h = 256 and h = 1024 HMMs (LVD and random init, same EM budget)
# from the base LM of bench/train_base_lm.py, then bench/steering.py for each size (at h = 1024 only the HMM methods).
#   HMMLVD_DATA=../shared/data/wikitext-2 flock /tmp/hmmlvd-cpu.lock bash bench/steering_study.sh [RUNS_DIR]
set -euo pipefail
R=${1:-runs}
D=${HMMLVD_DATA:?set HMMLVD_DATA to the WikiText-2 folder}
for H in 256 1024; do
  python -m hmmlvd distill-lm "$R/base-lm" --out "$R/steer-hmm-$H" --num-samples 20000 --heldout-samples 1000 \
    --num-tokens 32 --teacher hidden --num-states $H --lvd-windows 0 --phase1-epochs 3 --phase2-epochs 1 \
    --batch-size 2048 --compare-random --sample-batch-size 128 --device cpu --sample-cache-dir "$R/sample-cache" \
    --cache-dir "$R/cache" --no-progress
done
python bench/steering.py --base-lm "$R/base-lm" --hmm "$R/steer-hmm-256" --data-dir "$D" --num-examples 200 \
  --budget 1.0 --threads 1 --out bench/results/steering.json
python bench/steering.py --base-lm "$R/base-lm" --hmm "$R/steer-hmm-1024" --data-dir "$D" --num-examples 200 \
  --budget 1.0 --threads 1 --methods hmm_alone,steered_lvd,steered_random --out bench/results/steering_h1024.json
