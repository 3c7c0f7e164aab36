#!/usr/bin/env bash
# Download, here (a machine that reaches PyPI), the wheels benchmarks/gpu_check.py needs on the lent H200, whose image
# has torch, triton, transformers 5.17, accelerate, peft, pandas, pyarrow, xxhash, huggingface-hub but no trl,
# datasets or liger-kernel (/work/.library/device/KINDS.md). Into .whl/ (git-ignored), for CPython 3.12 manylinux;
# --no-deps, so the missing dependencies are named too: datasets needs dill and multiprocess. One version of each.
#   bash benchmarks/gpu_wheels.sh        # then: run tool, command "bash benchmarks/gpu_check.sh", carry [".whl"]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]/#/--platform=}" -d .whl \
    "trl==1.16.0" "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" "liger-kernel==0.8.5"
ls -l .whl
du -sh .whl
