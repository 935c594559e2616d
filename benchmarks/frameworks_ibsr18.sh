#!/usr/bin/env bash
# The framework comparison on IBSR18 (issue 37): rows 5, 8, 9 x torch, tf x folds 0-4 at profile=quick, and a
# same-framework control (row 5 torch, seed 1) per fold; then each network row's training speed and memory per
# framework from `bench train-speed` (fresh serial processes), then `bench compare --axis framework` and
# `--axis seed` (the speed table: benchmarks/speed_table.py, medians over the speed rounds).
#
#   benchmarks/frameworks_ibsr18.sh [sweep|speed|compare|all]   (default: all)
#
# Fold by fold, so both frameworks of a fold run on one host: a sweep cut off (or spread over machines) resumes
# where it stopped, finished runs are skipped by their settings hash. PRECISION (default fp32) is set explicitly
# so that a resumed sweep stays in one precision whatever CPU it lands on. Environment: IBSR18_ROOT
# (../shared/data/ibsr18), RUNS (runs/frameworks), PRECISION (fp32), FOLDS ("0 1 2 3 4"), JOBS (2); for `speed`
# REPEATS (3) and STEPS (40).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BENCH=${BENCH:-.venv/bin/bench}
IBSR18_ROOT=${IBSR18_ROOT:-../shared/data/ibsr18}
RUNS=${RUNS:-runs/frameworks}
PRECISION=${PRECISION:-fp32}
FOLDS=${FOLDS:-"0 1 2 3 4"}
JOBS=${JOBS:-2}
REPEATS=${REPEATS:-3}
STEPS=${STEPS:-40}
EXPERIMENT=frameworks-ibsr18-quick
RUNS=$(realpath -m "$RUNS")
IBSR18_ROOT=$(realpath -m "$IBSR18_ROOT")   # the data root is part of a run's settings: one spelling, absolute
mkdir -p "$RUNS"
COMMON=(data=ibsr18 "data.root=$IBSR18_ROOT" profile=quick "profile.precision=$PRECISION"
        "tracking.experiment=$EXPERIMENT" "paths.runs=$RUNS" "paths.cache=$RUNS/cache" "paths.outputs=$RUNS/outputs")

sweep() {
  for fold in $FOLDS; do
    # The control (one thread) runs beside the six-run multirun, so no core idles at the fold's tail; wall times of
    # sweep runs share cores either way: speed comes from the `speed` step.
    echo "== fold $fold: rows 5, 8, 9 x torch, tf, and the control (row 5 torch seed 1)  ($(date -u +%H:%M:%S))"
    "$PY" -m bench.run +experiment=table1/row5 framework=torch seed=1 "data.fold=$fold" "${COMMON[@]}" &
    local control=$!
    local status=0
    "$PY" -m bench.run --multirun +experiment=table1/row5,table1/row8,table1/row9 framework=torch,tf \
      "data.fold=$fold" "${COMMON[@]}" hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" || status=$?
    wait "$control" || status=$?
    [ "$status" -eq 0 ] || exit "$status"
  done
}

speed() {
  # REPEATS rounds, the frameworks' order alternating, each row a fresh process; the write-up takes each
  # row x framework's median. One round of 20 steps was too noisy for inference: rows 5 and 8 (the same network)
  # measured 131 and 85 patches/s in torch on an idle machine (docs/results/data/frameworks-ibsr18/).
  : > "$RUNS/train-speed.jsonl"
  local order
  for round in $(seq 1 "$REPEATS"); do
    if [ $((round % 2)) -eq 1 ]; then order="torch tf"; else order="tf torch"; fi
    for framework in $order; do
      for row in 2 3 5 8 9; do
        "$BENCH" train-speed --row "$row" --profile quick --framework "$framework" --precision "$PRECISION" \
          --steps "$STEPS" --warmup 3 >> "$RUNS/train-speed.jsonl"
      done
    done
  done
}

compare() {
  PYTHONPATH=. "$PY" -m benchmarks.speed_table "$RUNS/train-speed.jsonl" > "$RUNS/speed-table.md"
  "$BENCH" compare --runs-dir "$RUNS" --experiment "$EXPERIMENT" --axis framework --out "$RUNS/compare-framework"
  "$BENCH" compare --runs-dir "$RUNS" --experiment "$EXPERIMENT" --axis seed --out "$RUNS/compare-seed"
}

case "${1:-all}" in
  sweep) sweep ;;
  speed) speed ;;
  compare) compare ;;
  all) sweep; speed; compare ;;
  *) echo "error: unknown step '$1' (sweep | speed | compare | all)" >&2; exit 2 ;;
esac
