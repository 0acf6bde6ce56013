#!/usr/bin/env bash
# The GPU check (issue 15): on a machine with an NVIDIA GPU, in under 10 minutes,
#   1. the Python environment from the lock (uv sync --frozen), or one that is already there;
#   2. `python -m trcgl info --device cuda` (fails at once when torch sees no GPU);
#   3. the CUDA tests: pytest -m cuda (device selection, the classifier's bf16 autocast, the
#      diffusion model trained and sampled on CUDA, the stage graph on device cuda, and a
#      two-GPU data-parallel step when two GPUs are visible);
#   4. the smoke book on CUDA (what make reproduce PROFILE=smoke DEVICE=cuda runs);
#   5. if time is left: the estimate of the gpu profile measured on this GPU
#      (python -m trcgl run all --profile gpu --estimate), to compare with the reference figures.
# Each step's log and a summary go to $OUT (the device tool's folder) or _build/gpu-check/.
#
#   bash tools/gpu_check.sh             run it
#   bash tools/gpu_check.sh --dry-run   print the steps; run only what needs no GPU (the CUDA
#                                       tests must collect and skip, the make targets must parse)
#
# The environment. With registry access, step 1 is `uv sync --frozen` (make install). Without it
# (an isolated GPU machine), carry what the lock installs: either the .venv made by `make install`
# on a machine of the same OS, CPU architecture and Python 3.11 (the script uses an existing
# .venv as it is), or uv's download cache (UV_CACHE_DIR, filled by `make install` elsewhere; the
# script then installs with UV_OFFLINE=1), or set TRCGL_PYTHON to an interpreter that already has
# the locked packages. The lock's CUDA build of torch alone is some gigabytes.
set -uo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
LOG=${OUT:-$ROOT/_build/gpu-check}
mkdir -p "$LOG"
BUDGET=${GPU_CHECK_BUDGET_S:-570}     # the whole check, seconds (10 minutes less a margin)
START=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} TRCGL_RUN_DIR=${TRCGL_RUN_DIR:-$ROOT/runs}
CHAPTERS=(notebooks/[0-9][0-9]_*.py)
SUMMARY=()

left() { echo $(( BUDGET - (SECONDS - START) )); }

# step NAME SECONDS CMD...: run CMD with a time limit (no more than what is left), log it, record the result
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  (( limit > $(left) )) && limit=$(left)
  echo "== $name (limit ${limit}s): $*"
  if (( DRY )); then SUMMARY+=("$name: (dry run) $*"); return 0; fi
  if (( limit <= 10 )); then SUMMARY+=("$name: SKIPPED (no time left)"); return 0; fi
  timeout --kill-after=10 "$limit" "$@" > >(tee "$LOG/$name.log") 2>&1
  rc=$?
  local verdict=ok
  (( rc == 124 || rc == 137 )) && verdict="TIMED OUT"
  (( rc != 0 && rc != 124 && rc != 137 )) && verdict="FAILED (exit $rc)"
  SUMMARY+=("$name: $verdict in $(( SECONDS - t0 )) s (log: $LOG/$name.log)")
  return $rc
}

finish() {
  { echo "GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(( SECONDS - START )) s in all"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    printf '%s\n' "${SUMMARY[@]}"; } | tee "$LOG/summary.txt"
  exit "${1:-0}"
}

# -- 1. the environment
if [[ -n "${TRCGL_PYTHON:-}" ]]; then
  PY=$TRCGL_PYTHON
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch, trcgl" 2>/dev/null; then
  PY=$ROOT/.venv/bin/python
else
  PY=$ROOT/.venv/bin/python
  if [[ -n "${UV_CACHE_DIR:-}" ]]; then export UV_OFFLINE=1; fi
  step install 300 make install || finish 1
fi
echo "python: $PY"
if (( DRY )); then
  "$PY" -c "import torch; print('torch', torch.__version__, 'sees a GPU:', torch.cuda.is_available())"
fi

# -- 2. the GPU, as the package sees it
step info 60 "$PY" -m trcgl info --device cuda || finish 1

# -- 3. the CUDA tests (all skipped without a GPU: on a GPU machine a skip other than the
#       two-GPU test is a failure of the check)
if (( DRY )); then
  echo "== cuda-tests (dry run): collecting them here, where they must be skipped"
  "$PY" -m pytest -q -m cuda tests/test_cuda.py -rs -p no:cacheprovider 2>&1 | tail -n 8
  SUMMARY+=("cuda-tests: (dry run) $PY -m pytest -m cuda tests/test_cuda.py -rs")
else
  step cuda-tests 240 "$PY" -m pytest -q -m cuda tests/test_cuda.py -rs -p no:cacheprovider
  rc=$?
  if grep -E "^SKIPPED" "$LOG/cuda-tests.log" | grep -qv "needs two GPUs"; then
    SUMMARY+=("cuda-tests: a CUDA test was skipped on this GPU machine (see the log)"); rc=1
  fi
  (( rc == 0 )) || finish 1
fi

# -- 4. the smoke book on CUDA: what `make reproduce PROFILE=smoke DEVICE=cuda` runs (the stages,
#       every chapter, the book), called directly so that no install step runs on the way
# shellcheck disable=SC2317  # called through `bash -c` (under timeout)
smoke_book() {
  local nb
  "$PY" -m trcgl run all --profile smoke --device cuda || return $?
  for nb in notebooks/[0-9][0-9]_*.py; do
    "$PY" -m trcgl execute "$nb" --profile smoke --device cuda --quiet || return $?
  done
  "$PY" -m trcgl build-book
}
if (( DRY )); then
  echo "== smoke-book (dry run): $PY -m trcgl run all --profile smoke --device cuda; then execute, each with" \
       "--profile smoke --device cuda:" "${CHAPTERS[@]}" "; then $PY -m trcgl build-book"
  SUMMARY+=("smoke-book: (dry run) the stages, ${#CHAPTERS[@]} chapters, the book")
else
  export PY
  export -f smoke_book
  step smoke-book 420 bash -c smoke_book || finish 1
fi

# -- 5. the gpu profile's estimate, measured on this GPU (only with time to spare)
step gpu-estimate 150 "$PY" -m trcgl run all --profile gpu --device cuda --estimate
finish 0
