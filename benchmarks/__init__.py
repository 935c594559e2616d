"""The performance benchmark suite (``python -m benchmarks.suite``, ``make bench``).

Each module times brainbench's own implementation against the tool a user would otherwise pick, in
the same process, after warm-up, as the median of several repetitions:

- ``bench_metrics``: ``bench.evaluation.metrics`` vs medpy's per-metric functions.
- ``bench_inference``: ``bench.patching.inference.predict_volume`` vs MONAI's ``sliding_window_inference``.
- ``bench_patches`` and ``bench_sampler_torchio``: ``bench.patching.sampler.PatchSampler`` alone and vs a
  torchio ``Queue`` with a ``LabelSampler``.
- ``bench_training`` (with ``training_*``): the adapters' training loop vs bare forward/backward/step, achieved GFLOP/s vs the
  CPU's matrix-multiply peak, the settings that move it, and ``bench train-speed`` for every model.

torchio (the ``bench`` extra) and MONAI's metrics are imported here only; ``bench/`` reaches MONAI only through
the networks a model YAML names by import path (``conf/model/monai_*.yaml``).
This module holds what the benchmarks share: the subjects they run on and an interleaved timer.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.types import FloatArray, Shape3

IBSR_SHAPE: Shape3 = (256, 128, 256)
QUICK_SHAPE: Shape3 = (48, 40, 48)
QUICK_SPACING_MM = (3.0, 3.0, 3.0)
"""``--quick`` uses ``bench.data.synth.phantom_case`` subjects (nested ellipsoids) of this size."""


@dataclass(frozen=True)
class BenchSubject:
    """One subject as the benchmarks use it.

    Attributes:
        id: Subject id.
        image: ``float32[X, Y, Z]`` intensities, z-scored inside the brain mask (0 outside).
        label: ``uint8[X, Y, Z]`` labels 0..3.
        mask: ``bool[X, Y, Z]`` brain mask (``label > 0``).
        spacing_mm: Voxel spacing along the array axes.
        source: ``synthetic`` or the label file it was read from.
    """

    id: str
    image: FloatArray
    label: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, float, float]
    source: str


def normalise(image: np.ndarray, mask: np.ndarray) -> FloatArray:
    """``float32`` z-score of ``image`` inside ``mask``; 0 outside."""
    values = image[mask].astype(np.float64)
    std = float(values.std()) or 1.0
    out = np.zeros(image.shape, dtype=np.float32)
    out[mask] = ((values - values.mean()) / std).astype(np.float32)
    return out


def ibsr_root() -> Path | None:
    """``$IBSR18_ROOT`` when it is set and names a folder, else ``None`` (use the synthetic cohort)."""
    value = os.environ.get("IBSR18_ROOT")
    return Path(value) if value and Path(value).is_dir() else None


def load_subjects(count: int, *, quick: bool = False, seed: int = 0) -> list[BenchSubject]:
    """``count`` subjects: IBSR18 training subjects when ``$IBSR18_ROOT`` is set, else synthetic ones.

    Synthetic subjects come from ``bench.data.synth.generate_subject`` on the IBSR grid (256×128×256). With
    ``quick`` they are tiny ``bench.data.synth.phantom_case`` ellipsoids instead (IBSR data is never used).
    """
    from bench.data.synth import generate_subject, phantom_case

    if quick:
        cases = [phantom_case(QUICK_SHAPE, QUICK_SPACING_MM, seed=seed + i, case_id=f"phantom-{i}")
                 for i in range(count)]
        return [_subject(c.id, c.image.array, c.label.array, c.image.spacing_mm, "phantom")  # type: ignore[union-attr]
                for c in cases]
    root = ibsr_root()
    if root is not None:
        return _ibsr_subjects(root, count)
    subjects = []
    for index in range(count):
        image, label = generate_subject(index, seed)
        subjects.append(_subject(f"synthetic-{index}", image.array, label.array, image.spacing_mm, "synthetic"))
    return subjects


def _ibsr_subjects(root: Path, count: int) -> list[BenchSubject]:
    from bench.errors import DataError
    from bench.io import read_volume

    folders = sorted(p for p in (root / "Training_Set").glob("IBSR_*") if p.is_dir())
    if len(folders) < count:
        raise DataError(f"{len(folders)} IBSR18 training subjects found, the benchmark needs {count}",
                        path=root / "Training_Set", fix="point IBSR18_ROOT at the IBSR18 folder or unset it")
    subjects = []
    for folder in folders[:count]:
        image = read_volume(folder / f"{folder.name}.nii.gz")
        label = read_volume(folder / f"{folder.name}_seg.nii.gz")
        subjects.append(_subject(folder.name, image.array, label.array, image.spacing_mm,
                                 str(folder / f"{folder.name}_seg.nii.gz")))
    return subjects


def _subject(sid: str, image: np.ndarray, label: np.ndarray, spacing: Sequence[float], source: str) -> BenchSubject:
    label = np.asarray(label).astype(np.uint8)
    mask = label > 0
    spacing_mm = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return BenchSubject(sid, normalise(np.asarray(image), mask), label, mask, spacing_mm, source)


def brain_box(mask: np.ndarray, margin: int = 4) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped to the volume)."""
    coords = np.argwhere(mask)
    low = np.maximum(coords.min(axis=0) - margin, 0)
    high = np.minimum(coords.max(axis=0) + 1 + margin, mask.shape)
    return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1])), slice(int(low[2]), int(high[2]))


@dataclass
class Timings:
    """What ``time_interleaved`` measured, keyed by function name (seconds)."""

    wall: dict[str, float]
    """Median wall time."""
    cpu: dict[str, float]
    """Median CPU time of this process (all its threads): steadier than wall time on a shared machine
    for single-threaded work, since time spent waiting for a core is not counted."""
    wall_all: dict[str, list[float]]
    cpu_all: dict[str, list[float]]
    results: dict[str, Any]
    """The last return value of each function."""

    def best(self, cpu: bool) -> dict[str, float]:
        """``cpu`` or ``wall`` medians."""
        return self.cpu if cpu else self.wall

    def lists(self) -> dict[str, dict[str, list[float]]]:
        """Every measurement, rounded to ms (for the JSON)."""
        return {"wall_s": {k: [round(t, 3) for t in v] for k, v in self.wall_all.items()},
                "cpu_s": {k: [round(t, 3) for t in v] for k, v in self.cpu_all.items()}}


def time_interleaved(functions: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> Timings:
    """Time each function in turn so that load drifts hit all alike; medians.

    Round ``r`` calls the functions in their order rotated by ``r`` (A B C, B C A, C A B, ...), so none
    always runs right after the same other one.

    Args:
        functions: Name -> function to time.
        repeats: Timed calls of each function.
        warmup: Untimed calls of each function first (in order).
    """
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in functions.items():
            results[name] = fn()
    names = list(functions)
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = functions[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    return Timings(wall={k: statistics.median(v) for k, v in wall.items()},
                   cpu={k: statistics.median(v) for k, v in cpu.items()}, wall_all=wall, cpu_all=cpu,
                   results=results)


def rounded(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (for readable JSON)."""
    return float(f"{value:.{digits}g}")
