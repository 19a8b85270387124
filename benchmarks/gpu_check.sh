#!/usr/bin/env bash
# The GPU check in one shot (issue 20): benchmarks/gpu_check.py does the work; this picks a Python and runs it
# from the repository root. Arguments pass through (--cpu-smoke, --budget S, --skip PHASES, ...).
# Results: $OUT/gpu_check.json (OUT unset: the current folder). See benchmarks/GPU_CHECK.md.
set -u
OUT="${OUT:-$PWD}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
export OUT
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
if [ -z "$PY" ]; then echo "gpu_check.sh: no python3 or python on PATH" >&2; exit 2; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
