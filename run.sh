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
export MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.install-stamp
want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q "torch==2.13.0"
  fi
  "$PY" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

cmd="${1:-main}"; shift || true
case "$cmd" in
  main) exec "$PY" -m ceu_rl.main "$@" ;;
  test) exec "$PY" -m pytest -q "$@" ;;
  *) echo "usage: bash run.sh [main|test] [args...]" >&2; exit 2 ;;
esac
