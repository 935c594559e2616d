"""fp32 vs bf16 training speed of the 3D U-Net through the adapters' own ``fit`` (torch autocast, Keras
``mixed_bfloat16``), on the same batches, alternating precisions so that load drifts hit both alike."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from typing import Any

from bench.contract import NullLogger
from bench.hardware import cpu_has_native_bf16
from benchmarks import BenchSubject, rounded
from benchmarks.training_common import train_spec
from benchmarks.training_overhead import TimedSource, grid_sampler


def precision_speed(subjects: Sequence[BenchSubject], *, framework: str, base_filters: int, depth: int, patch: int,
                    batch_size: int, steps: int, epochs: int = 4, rounds: int = 2, threads: int = 1,
                    precisions: Sequence[str] = ("fp32", "bf16"), norm: str = "none") -> dict[str, Any]:
    """Training patches/s of the adapter's fit in each precision: ``rounds`` fits of ``epochs`` epochs each.

    The rounds alternate the precisions (fp32, bf16, fp32, bf16, ...). Each fit's first epoch is a warm-up
    (TF traces its step there); the figure is ``steps · batch_size`` over the median wall time of the other
    epochs, across rounds. bf16 is skipped (``None``) on a CPU without native bf16. ``norm`` is the U-Net's
    normalisation (``model.params.norm``).

    Returns:
        ``{"fp32": patches/s, "bf16": patches/s | None, "speedup_bf16": ..., "epochs_wall_s": {...}, ...}``.
    """
    from bench.training import frameworks

    frameworks.configure_threads(framework, threads)  # before TF starts (building a model starts it)
    runnable = [p for p in precisions if p != "bf16" or cpu_has_native_bf16()]
    sampler = grid_sampler(subjects, patch, batch_size)
    walls: dict[str, list[float]] = {p: [] for p in runnable}
    cpus: dict[str, list[float]] = {p: [] for p in runnable}
    for _, precision in itertools.product(range(rounds), runnable):
        source = TimedSource(sampler, steps)
        segmenter: Any = frameworks.build("unet3d", framework, base_filters=base_filters, depth=depth, norm=norm)
        segmenter.fit(source, None, train_spec(steps, epochs, threads, precision), NullLogger())
        assert segmenter.describe()["precision"] == precision
        timed = source.epoch_seconds()[1:]  # epoch 0 warms up; the last epoch has no end mark
        walls[precision] += [wall for wall, _ in timed]
        cpus[precision] += [cpu for _, cpu in timed]
    patches = steps * batch_size
    result: dict[str, Any] = {p: None for p in precisions}
    result.update({p: rounded(patches / statistics.median(walls[p])) for p in runnable})
    result["patches_per_cpu_s"] = {p: rounded(patches / statistics.median(cpus[p])) for p in runnable}
    if result.get("fp32") and result.get("bf16"):
        result["speedup_bf16"] = rounded(result["bf16"] / result["fp32"])
    result["epochs_wall_s"] = {p: [round(t, 3) for t in walls[p]] for p in runnable}
    result["skipped"] = [p for p in precisions if p not in runnable]
    result["settings"] = {"framework": framework, "model": f"unet3d base_filters={base_filters} depth={depth} norm={norm}",
                          "patch": patch, "batch_size": batch_size, "steps_per_epoch": steps, "epochs": epochs,
                          "rounds": rounds, "threads": threads}
    return result
