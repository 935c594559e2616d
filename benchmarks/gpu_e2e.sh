#!/usr/bin/env bash
# Table 1 end to end on this machine's GPU within a budget: every row at profile=smoke per framework that sees
# the GPU, full-profile rows 5 and 9 for a few epochs, the GPU busy share (nvidia-smi), patches/s, the full
# table's projected time; one summary table, then one JSON line. It needs only a CUDA torch besides
# brainbench's own dependencies (TensorFlow optional) and makes its own tiny cohort.
# Usage: benchmarks/gpu_e2e.sh [--budget-min N] [--full-epochs N] [--out DIR] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" -m benchmarks.gpu_e2e "$@"
