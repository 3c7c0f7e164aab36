#!/usr/bin/env bash
# benchmarks/gpu_check.py on a lent GPU, in one command (issue 19). Prepare here first: bash benchmarks/gpu_wheels.sh
# Then the device tool's run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 600.
# Installs the carried wheels into /tmp/site (the image's own packages stay), runs the check (<= 8 minutes on one
# H200; the trainer sections are skipped past --budget-s 420), and writes $OUT/gpu_check_<gpu>.json and
# $OUT/gpu_check.log ($OUT: the folder the device tool returns; benchmarks/results/ when unset). Commit the JSON
# into benchmarks/results/ and update docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false \
    MPLBACKEND=Agg PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "no .whl/*.whl: using the installed trl, datasets and liger-kernel (if any)"
fi
out=${OUT:-benchmarks/results}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu_check.log"
timeout 560 python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee -a "$out/gpu_check.log"
