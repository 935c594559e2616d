#!/usr/bin/env bash
# The full profile (paper scale) on a GPU: train/inference patches/s per Table 1 network row and the projected
# time of the whole table. Usage: benchmarks/gpu_check.sh [--device cuda|cpu] [--steps N] [--rows 5 9 ...]
# Needs the CUDA builds of torch / tensorflow on a GPU machine (pyproject pins the CPU wheels for CI):
# the JSON line at the end says which device each row ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m benchmarks.gpu_check "$@"
