#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, HMM and circuit timings, and LVD at h=1024 on WikiText-2.
#
#   bash bench/gpu_check.sh ASSETS OUT                  # every section
#   SECTIONS="pytest tf32" bash bench/gpu_check.sh ASSETS OUT
#
# Sections: pytest hmm_throughput pc_debd pc_fashion_mnist lvd tf32. ASSETS holds what the device machine
# cannot fetch: wikitext-2/ (the .xz files), debd/, fashion-mnist/ (IDX files) and minilm/ (the default
# encoder's folder). Each section has its own time limit and writes its log to OUT, so one failure or
# overrun leaves the others' results. For a dry run on a CPU:
#   DEVICE=cpu NUM_STATES=16 LVD_WINDOWS=64 TRAIN_WINDOWS=256 QUICK=1 bash bench/gpu_check.sh .gpu /tmp/out
set -u
ASSETS=${1:?assets folder}
OUT=${2:?output folder}
DEVICE=${DEVICE:-cuda}
NUM_STATES=${NUM_STATES:-1024}
LVD_WINDOWS=${LVD_WINDOWS:-0}
TRAIN_WINDOWS=${TRAIN_WINDOWS:-0}
QUICK=${QUICK:-0}
SECTIONS=${SECTIONS:-pytest hmm_throughput pc_debd pc_fashion_mnist lvd tf32}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

section() {  # section NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local status=$?
    tail -n 12 "$OUT/$name.txt"
    echo "=== $name: exit $status after $((SECONDS - start)) s"
}

wanted() { [[ " $SECTIONS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/machine.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/machine.txt"

if [ "$QUICK" = 1 ]; then STATES="16 32"; FM_LATENTS="4"; DEBD_EPOCHS="2 1"; TF32_STATES="16"; else
    STATES="256 1024 4096"; FM_LATENTS="16 32 64"; DEBD_EPOCHS="60 5"; TF32_STATES="1024 4096"; fi
read -r MINI FULL <<< "$DEBD_EPOCHS"
TRAIN_COMMON=(--num-states "$NUM_STATES" --train-windows "$TRAIN_WINDOWS" --train-stride 8 --phase1-epochs 5
    --phase2-epochs 1 --device "$DEVICE" --data-dir "$ASSETS/wikitext-2" --no-checkpoints --no-progress)

wanted pytest && section pytest 90 $PY -m pytest -q -p no:cacheprovider tests/hmm tests/pc tests/em \
    tests/constraints tests/test_lm.py tests/lvd/test_kmeans.py
wanted hmm_throughput && section hmm_throughput 90 $PY bench/hmm_throughput.py --device "$DEVICE" --states $STATES \
    --batch 2048
wanted pc_debd && section pc_debd 90 $PY bench/pc_debd.py --datasets baudio bnetflix --device "$DEVICE" \
    --root "$ASSETS/debd" --minibatch-epochs "$MINI" --fullbatch-epochs "$FULL" --step-end 0.02 --pseudocount 0.01
wanted pc_fashion_mnist && section pc_fashion_mnist 50 $PY bench/pc_fashion_mnist.py --device "$DEVICE" \
    --root "$ASSETS/fashion-mnist" --num-latents $FM_LATENTS --train-size 10000 --pseudocount 0.01
if wanted lvd; then
    section lvd 260 $PY -m hmmlvd train --preset paper "${TRAIN_COMMON[@]}" --lvd-windows "$LVD_WINDOWS" \
        --compare-random --encoder "$ASSETS/minilm" --encoder-batch-size 1024 --cache-dir /tmp/hmmlvd-cache \
        --out /tmp/hmmlvd-lvd
    cp /tmp/hmmlvd-lvd/lvd/results.json "$OUT/lvd_results.json" 2>/dev/null
    cp /tmp/hmmlvd-lvd/random/results.json "$OUT/lvd_random_results.json" 2>/dev/null
fi
if wanted tf32; then  # the TF32 opt-in: GEMM throughput and accuracy, then the same random-init run with and without
    section tf32_throughput 100 $PY bench/hmm_throughput.py --device "$DEVICE" --states $TF32_STATES --batch 2048 \
        --tf32
    section tf32_em_fp32 90 $PY -m hmmlvd train --preset paper --init random "${TRAIN_COMMON[@]}" --out /tmp/em-fp32
    section tf32_em_tf32 90 $PY -m hmmlvd train --preset paper --init random "${TRAIN_COMMON[@]}" --tf32 \
        --out /tmp/em-tf32
fi
echo "=== done"
