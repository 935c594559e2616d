"""Can the ``full`` profile (the paper's scale) run here, and how long would the whole Table 1 take?

For each network row of Table 1 at ``profile=full`` (paper widths, its patch and batch size) this times a
few training and inference steps with ``bench train-speed`` on the chosen device (one subprocess each, so
every row starts fresh), then projects the row's time from the profile's budget: at most ``epochs`` epochs
of ``patches per epoch`` training patches, plus sliding-window inference over the test volumes. The
projection is an upper bound for rows with early stopping. Run by ``benchmarks/gpu_check.sh``.

Example:
    python -m benchmarks.gpu_check --device cuda --steps 30      # prints a table and one JSON line
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from bench.config import run_spec_from_config
from bench.spec import NetworkSpec
from bench.sweeps import CONF_DIR, to_container

REPO = Path(__file__).resolve().parents[1]
IBSR_SHAPE = (256, 128, 256)
"""IBSR18's grid: the projection's volume size."""
TRAIN_SUBJECTS, TEST_SUBJECTS = 8, 5
"""The paper split: 8 training subjects (Training_Set without the two validation ones), 5 test subjects."""


def row_settings(row: int, framework: str | None) -> dict[str, Any] | None:
    """The full profile's effective settings of a Table 1 row (None for the atlas)."""
    overrides = [f"+experiment=table1/row{row}", "profile=full", "data.root=unused"]
    if framework:
        overrides.append(f"framework={framework}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        spec = run_spec_from_config(to_container(compose(config_name="config", overrides=overrides)))
    if not isinstance(spec.segmenter, NetworkSpec):
        return None
    s, train = spec.segmenter.sampling, spec.segmenter.train
    grid = math.prod((size - p) // step + 1 for size, p, step in zip(IBSR_SHAPE, s.patch_size, s.step, strict=True))
    per_epoch = s.patches_per_epoch if s.mode != "grid" else grid * TRAIN_SUBJECTS  # grid: one pass, an upper bound
    if train.steps_per_epoch is not None:
        per_epoch = min(per_epoch, train.steps_per_epoch * s.batch_size)
    overlap = spec.segmenter.inference.overlap
    stride = [max(1, int(p * (1 - overlap))) for p in s.patch_size]
    infer = math.prod(math.ceil((size - p) / st) + 1 for size, p, st in zip(IBSR_SHAPE, s.patch_size, stride, strict=True))
    return {"row": row, "architecture": spec.segmenter.architecture, "framework": spec.segmenter.framework,
            "params": spec.segmenter.config.to_params(), "patch": s.patch_size[0], "batch": s.batch_size,
            "epochs": train.epochs, "patches_per_epoch": per_epoch, "inference_patches": infer * TEST_SUBJECTS,
            "precision": train.precision}


def time_row(row: dict[str, Any], device: str, steps: int, timeout_s: float, precision: str | None = None
             ) -> dict[str, Any]:
    """``bench train-speed`` for the row's network at ``precision`` (default: the profile's); rates and hours."""
    command = [sys.executable, "-m", "bench", "train-speed", "--arch", row["architecture"], "--framework",
               row["framework"], "--patch", str(row["patch"]), "--batch", str(row["batch"]), "--steps", str(steps),
               "--warmup", "3", "--device", device,
               "--precision", precision or row["precision"]]
    for name, value in row["params"].items():
        command += ["--param", f"{name}={json.dumps(value)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timeout after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {**row, "status": "failed: " + ((done.stderr.strip().splitlines() or ["no output"])[-1])[:200]}
    speed = json.loads(lines[-1])
    train_h = row["epochs"] * row["patches_per_epoch"] / speed["train_patches_per_s"] / 3600
    infer_h = row["inference_patches"] / speed["infer_patches_per_s"] / 3600
    return {**row, "status": "ok", "device": speed.get("device"), "precision": speed.get("precision"), "train_patches_per_s": speed["train_patches_per_s"],
            "infer_patches_per_s": speed["infer_patches_per_s"], "projected_hours": round(train_h + infer_h, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per row")
    parser.add_argument("--rows", type=int, nargs="+", default=list(range(2, 10)), help="Table 1 rows (2-9)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per row")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16"),
                        help="training precision (default: the full profile's, `auto`)")
    args = parser.parse_args(argv)
    results = []
    for row_number in args.rows:
        settings = row_settings(row_number, None)
        if settings is None:
            continue
        result = time_row(settings, args.device, args.steps, args.timeout, args.precision)
        results.append(result)
        rate = f"{result['train_patches_per_s']:8.1f}" if result["status"] == "ok" else "       -"
        hours = f"{result['projected_hours']:7.2f}" if result["status"] == "ok" else "      -"
        print(f"row {row_number}  {settings['architecture']:<9} {settings['framework']:<6} train patches/s {rate}"
              f"   projected h {hours}   {result['status']} on {result.get('device', '?')} {result.get('precision', '')}",
              flush=True)
    ok = [r for r in results if r["status"] == "ok"]
    total = sum(r["projected_hours"] for r in ok)
    print(f"projected Table 1 (rows {', '.join(str(r['row']) for r in ok)}; one row at a time): {total:.1f} h")
    print(json.dumps({"device": args.device, "rows": results, "projected_hours_total": round(total, 2)}))
    return 0 if ok and len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
