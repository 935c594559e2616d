"""Timing: ``bench.evaluation.metrics.evaluate_labels`` vs medpy's per-metric functions on one whole label map.

Scores the five metrics (dice, avd, hd, hd95, assd) for CSF, GM and WM of one 256×128×256 case. The reference
is IBSR_01's label map read from the shared data folder (never copied into the repo); the prediction is a
perturbed copy made here (a one-voxel shift along axis 0 plus 10 % of the boundary voxels relabelled from a
random neighbour). Without the data, a synthetic label map from smooth random fields is used instead.

Usage::

    .venv/bin/python benchmarks/bench_metrics.py [--reference PATH | --synthetic] [--repeats 5]
                                                 [--medpy-repeats 1]

Prints JSON with ``metrics_s_per_case``, ``medpy_s_per_case``, ``metrics_speedup_vs_medpy`` and
``metrics_max_abs_diff_vs_medpy`` (plus the set-up). Other code can call :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bench.evaluation.metrics import METRIC_NAMES, evaluate_labels
from bench.io import read_volume
from bench.types import TISSUE_NAMES

REPO = Path(__file__).resolve().parents[1]
IBSR_CASE = Path("Training_Set/IBSR_01/IBSR_01_seg.nii.gz")
SYNTHETIC_SHAPE = (256, 128, 256)
SYNTHETIC_SPACING = (0.9375, 1.5, 0.9375)


def default_reference() -> Path:
    """IBSR_01's label map under ``$IBSR18_ROOT`` (default ``<repo>/../shared/data/ibsr18``)."""
    root = Path(os.environ.get("IBSR18_ROOT", REPO.parent / "shared" / "data" / "ibsr18"))
    return root / IBSR_CASE


def synthetic_labels(seed: int = 0) -> np.ndarray:
    """A brain-sized 0..3 label map: an ellipsoid split into CSF/GM/WM by a smooth random field."""
    rng = np.random.default_rng(seed)
    coarse = ndimage.gaussian_filter(rng.standard_normal(tuple(s // 4 for s in SYNTHETIC_SHAPE)), 1.5)
    field = ndimage.zoom(coarse, 4, order=1)
    grid = np.ogrid[tuple(slice(0, s) for s in SYNTHETIC_SHAPE)]
    radius = sum(((g - s / 2) / (0.4 * s)) ** 2 for g, s in zip(grid, SYNTHETIC_SHAPE, strict=True))
    inside = radius < 1.0
    cuts = np.quantile(field[inside], [0.05, 0.6])
    labels = np.digitize(field, cuts).astype(np.uint8) + 1
    labels[~inside] = 0
    return labels


def perturb(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A one-voxel shift along axis 0, then 10 % of boundary voxels take a random 6-neighbour's label."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, 1, axis=0)
    boundary = ndimage.morphological_gradient(pred, size=3) > 0
    flat = np.flatnonzero(boundary & (rng.random(pred.shape) < 0.1))
    coords = np.array(np.unravel_index(flat, pred.shape))
    axis = rng.integers(0, 3, flat.size)
    coords[axis, np.arange(flat.size)] += rng.choice([-1, 1], flat.size)
    for i, size in enumerate(pred.shape):
        np.clip(coords[i], 0, size - 1, out=coords[i])
    out = pred.copy()
    out.ravel()[flat] = pred[tuple(coords)]
    return out


def medpy_scores(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, dict[str, float]]:
    """medpy 0.5.2, one function call per metric and class (how medpy is usually used)."""
    from medpy.metric import binary as mb

    scores = {}
    for label, name in TISSUE_NAMES.items():
        p, r = pred == label, ref == label
        scores[name] = {
            "dice": float(mb.dc(p, r)),
            "avd": abs(float(mb.ravd(p, r))) * 100.0,
            "hd": float(mb.hd(p, r, voxelspacing=spacing)),
            "hd95": float(mb.hd95(p, r, voxelspacing=spacing)),
            "assd": float(mb.assd(p, r, voxelspacing=spacing)),
        }
    return scores


def time_median(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, Any]:
    """Median wall time over ``repeats`` calls after ``warmup`` untimed calls; also the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(reference_path: Path | None, *, repeats: int = 5, medpy_repeats: int = 1) -> dict[str, Any]:
    """Time both implementations on one case and compare their values.

    Args:
        reference_path: A reference label map; ``None`` or a missing file uses the synthetic map.
        repeats: Timed calls of ``evaluate_labels`` (after one warm-up call); the median is reported.
        medpy_repeats: Timed calls of the medpy functions (no warm-up: one call takes tens of seconds).
    """
    if reference_path is not None and reference_path.is_file():
        volume = read_volume(reference_path)
        ref, spacing, source = volume.array.astype(np.uint8), volume.spacing_mm, str(reference_path)
    else:
        if reference_path is not None:
            print(f"note: {reference_path} not found; using a synthetic label map", file=sys.stderr)
        ref, spacing, source = synthetic_labels(), SYNTHETIC_SPACING, "synthetic"
    pred = perturb(ref)
    ours_s, ours = time_median(lambda: evaluate_labels(pred, ref, spacing), repeats, warmup=1)
    medpy_s, theirs = time_median(lambda: medpy_scores(pred, ref, spacing), medpy_repeats, warmup=0)
    diff = max(abs(ours[c][m] - theirs[c][m]) for c in ours for m in METRIC_NAMES)
    return {
        "metrics_s_per_case": round(ours_s, 4),
        "medpy_s_per_case": round(medpy_s, 3),
        "metrics_speedup_vs_medpy": round(medpy_s / ours_s, 1),
        "metrics_max_abs_diff_vs_medpy": diff,
        "source": source,
        "shape": list(ref.shape),
        "spacing_mm": list(spacing),
        "repeats": repeats,
        "medpy_repeats": medpy_repeats,
        "cpu_count": os.cpu_count(),
        "scores": ours,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--reference", type=Path, default=None, help="reference label map (default IBSR_01)")
    group.add_argument("--synthetic", action="store_true", help="use the synthetic label map")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--medpy-repeats", type=int, default=1)
    args = parser.parse_args(argv)
    reference = None if args.synthetic else (args.reference or default_reference())
    result = run(reference, repeats=args.repeats, medpy_repeats=args.medpy_repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
