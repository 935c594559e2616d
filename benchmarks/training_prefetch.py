"""The share of a training step spent waiting for data, with and without the batch prefetch (issue 38).

``bench.training.loop.fit`` runs as in training (a grid ``PatchSampler`` on the benchmark subjects, no
validation), once with ``prefetch_batches=0`` and once with the profile's prefetch, alternated ``rounds`` times.
Per fit: ``wait = 1 - (seconds inside the steps) / (seconds of the training epochs)``, the median over its
epochs after the first (the first batch of a fit always waits).

Two kinds of step:
- ``gpu_speed``: a stand-in that sleeps ``batch_size / patches_per_s`` seconds (2,000 patches/s: the
  full-profile U-Net on one H200) and uses no CPU, as a GPU step leaves the host free; this is the figure that
  says how much the GPU would idle.
- ``cpu``: the torch adapter's real training step of a small U-Net on this CPU (the sampler's share is small
  here, below the noise of a shared machine).

Prefetch hides the sampling only up to the sampler's own speed (``sampler_patches_per_s``, one thread, timed
here alone): where that is below the step's, the step still waits for the difference. The first batch of
every epoch waits too (the prefetch starts with the epoch).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.contract import EpochRecord, NullLogger, PatchBatch, TrainSpec
from bench.patching.sampler import PatchSampler
from bench.training import loop
from benchmarks import BenchSubject, rounded
from benchmarks.training_common import train_spec
from benchmarks.training_overhead import grid_sampler

GPU_PATCHES_PER_S = 2000.0
"""The stand-in step's speed: the full-profile U-Net's training patches/s on one H200 (issue 38)."""


class TimedSteps:
    """Wraps ``TrainSteps`` (anything else is passed through) and adds up the seconds spent in ``train_step``."""

    def __init__(self, steps: Any) -> None:
        self._steps = steps
        self.step_s = 0.0

    def train_step(self, batch: PatchBatch) -> float:
        start = time.perf_counter()
        try:
            return float(self._steps.train_step(batch))
        finally:
            self.step_s += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._steps, name)


class SleepSteps:
    """A GPU-speed stand-in: a train step sleeps ``seconds`` (no CPU used) and returns a loss of 1."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def train_step(self, batch: PatchBatch) -> float:
        time.sleep(self.seconds)
        return 1.0

    def eval_step(self, batch: PatchBatch) -> tuple[float, Any]:
        raise NotImplementedError("the benchmark validates nothing")

    def get_lr(self) -> float:
        return 1.0

    def set_lr(self, lr: float) -> None:
        pass

    def snapshot(self) -> None:
        return None

    def restore(self, state: Any) -> None:
        pass


class EpochMarks(NullLogger):
    """A run logger that notes the steps' cumulative step seconds at the end of every epoch."""

    def __init__(self, timed: TimedSteps) -> None:
        self.timed = timed
        self.marks: list[float] = [0.0]

    def log_epoch(self, record: EpochRecord) -> None:
        self.marks.append(self.timed.step_s)


def measure(steps: Any, sampler: PatchSampler, spec: TrainSpec) -> float:
    """Data-wait share of one fit of ``steps`` on ``sampler``: median over its epochs after the first."""
    timed = TimedSteps(steps)
    marks = EpochMarks(timed)
    history = loop.fit(timed, sampler, None, spec, marks)
    step_s = [b - a for a, b in zip(marks.marks, marks.marks[1:], strict=False)]
    shares = [1.0 - s / r.seconds for s, r in zip(step_s, history.epochs, strict=True)]
    return statistics.median(shares[1:] or shares)


def data_wait(subjects: Sequence[BenchSubject], *, patch: int = 32, batch_size: int = 16, steps: int = 40,
              epochs: int = 3, rounds: int = 3, depth: int = 2, cpu_base_filters: int = 8, cpu_depth: int = 3,
              cpu_batch_size: int = 8, cpu_steps: int = 4, threads: int = 1,
              patches_per_s: float = GPU_PATCHES_PER_S) -> dict[str, Any]:
    """Data-wait share of a step without and with prefetch (``depth`` batches), for the GPU-speed stand-in step
    (``patch``³, ``batch_size`` as the full profile) and for the torch adapter's real step on this CPU."""
    from bench.training import frameworks

    sampler = grid_sampler(subjects, patch, batch_size)
    cpu_sampler = grid_sampler(subjects, patch, cpu_batch_size)
    stand_in = SleepSteps(batch_size / patches_per_s)
    results: dict[str, dict[int, list[float]]] = {"gpu_speed": {0: [], depth: []}, "cpu": {0: [], depth: []}}
    segmenter: Any = frameworks.build("unet3d", "torch", base_filters=cpu_base_filters, depth=cpu_depth)
    for _ in range(rounds):
        for ahead in (0, depth):
            spec = _spec(train_spec(steps, epochs, threads), ahead)
            results["gpu_speed"][ahead].append(measure(stand_in, sampler, spec))
            cpu_spec = _spec(train_spec(cpu_steps, epochs, threads), ahead)
            segmenter._configure(cpu_spec)
            results["cpu"][ahead].append(measure(segmenter._steps(cpu_spec), cpu_sampler, cpu_spec))
    start = time.perf_counter()
    made = sum(b.image.shape[0] for b in itertools.islice(sampler.batches(0), steps))
    out: dict[str, Any] = {"sampler_patches_per_s": rounded(made / (time.perf_counter() - start))}
    for kind, by_depth in results.items():
        out[f"train_data_wait_fraction_{kind}_no_prefetch"] = rounded(statistics.median(by_depth[0]))
        out[f"train_data_wait_fraction_{kind}_prefetch"] = rounded(statistics.median(by_depth[depth]))
    out["settings"] = {
        "gpu_speed": {"patch": patch, "batch_size": batch_size, "steps_per_epoch": steps,
                      "stand_in_step_s": rounded(batch_size / patches_per_s), "patches_per_s": patches_per_s},
        "cpu": {"model": f"unet3d base {cpu_base_filters} depth {cpu_depth} (torch, fp32)", "patch": patch,
                "batch_size": cpu_batch_size, "steps_per_epoch": cpu_steps, "threads": threads},
        "epochs": epochs, "rounds": rounds, "prefetch_batches": depth, "sampler": "grid, step patch/2, shuffled",
    }
    out["runs"] = {kind: {str(k): [round(v, 4) for v in vs] for k, vs in by_depth.items()}
                   for kind, by_depth in results.items()}
    return out


def _spec(spec: TrainSpec, prefetch: int) -> TrainSpec:
    from dataclasses import replace

    return replace(spec, prefetch_batches=prefetch)
