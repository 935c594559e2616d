"""Timing of the training PatchSampler on IBSR-sized synthetic volumes.

Ten 256×128×256 subjects (random float32 intensities; an ellipsoid brain with a CSF shell and
"ventricles", GM and WM inside), 32³ patches, step 16, batch 8, grid mode with CSF oversampling ×3.
Reports sampler throughput (patches per wall second, and per CPU second, which is steadier on a shared
machine; extraction is single-threaded), construction time and the memory the sampler needs: its int32
index plus the volumes it references (nothing else is allocated).

Run: ``.venv/bin/python -m benchmarks.bench_patches`` (prints JSON).
"""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import numpy as np

from bench.patching.sampler import PatchSampler, PatchSubject

IBSR_SHAPE = (256, 128, 256)


def synthetic_subject(shape: tuple[int, int, int], seed: int) -> PatchSubject:
    """Random intensities; labels from the normalised radius of a slightly random ellipsoid."""
    rng = np.random.default_rng(seed)
    semi_axes = np.array(shape, dtype=np.float32) * rng.uniform(0.36, 0.42, size=3).astype(np.float32)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    radius_sq = sum(((g - n / 2) / a) ** 2 for g, n, a in zip(grids, shape, semi_axes, strict=True))
    radius = np.sqrt(np.asarray(radius_sq, dtype=np.float32))
    label = np.zeros(shape, dtype=np.uint8)
    label[radius < 1.0] = 3  # WM
    label[(radius >= 0.7) & (radius < 0.9)] = 2  # GM
    label[(radius >= 0.9) & (radius < 1.0)] = 1  # CSF shell
    label[radius < 0.12] = 1  # ventricles
    image = rng.random(shape, dtype=np.float32)
    return PatchSubject(image=image, label=label, mask=radius < 1.0, id=f"synthetic-{seed}")


def run(num_subjects: int = 10, shape: tuple[int, int, int] = IBSR_SHAPE, patch_size: int = 32,
        step: int = 16, batch_size: int = 8, max_batches: int = 400, seed: int = 0) -> dict[str, Any]:
    """Build the sampler, time ``max_batches`` batches of epoch 0 and measure memory.

    Returns:
        A JSON-ready dict of the settings and figures.
    """
    subjects = [synthetic_subject(shape, seed + i) for i in range(num_subjects)]
    tracemalloc.start()
    started = time.perf_counter()
    sampler = PatchSampler(subjects, patch_size, step=step, batch_size=batch_size, seed=seed, mode="grid",
                           oversample=True, oversample_class=1, oversample_factor=3)
    construct_s = time.perf_counter() - started
    _, construct_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    patches = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for count, batch in enumerate(sampler.batches(0), start=1):
        patches += len(batch.image)
        if count >= max_batches:
            break
    extract_s, extract_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started

    volumes_bytes = sum(s.image.nbytes + s.label.nbytes + s.mask.nbytes for s in subjects)
    index_bytes = sampler.index.nbytes + sampler.oversampled.nbytes
    return {
        "subjects": num_subjects,
        "volume_shape": list(shape),
        "patch_size": patch_size,
        "step": step,
        "batch_size": batch_size,
        "mode": "grid+csf_oversample_x3",
        "num_candidates": sampler.num_candidates,
        "num_oversampled": int(sampler.oversampled.sum()),
        "epoch_patches": sampler.epoch_size,
        "batches_per_epoch": len(sampler),
        "construct_s": round(construct_s, 3),
        "construct_peak_mb": round(construct_peak / 2**20, 3),
        "timed_patches": patches,
        "patches_per_s": round(patches / extract_s, 1),
        "patches_per_cpu_s": round(patches / extract_cpu_s, 1),
        "index_mb": round(index_bytes / 2**20, 3),
        "volumes_mb": round(volumes_bytes / 2**20, 1),
        "total_mb": round((index_bytes + volumes_bytes) / 2**20, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
