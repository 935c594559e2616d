"""Timing: ``bench.patching.sampler.PatchSampler`` vs a torchio ``Queue`` with a ``LabelSampler``, same patches.

Both produce ``patches_per_subject × subjects`` foreground-centred patches of ``patch``³ voxels in batches
of ``batch_size`` from the same in-memory subjects, with no worker processes:

- ours: ``PatchSampler(mode="random")``: patch centres drawn uniformly from the brain-mask voxels
  (mask = label > 0), the patch kept inside the volume; batches of numpy arrays.
- torchio: ``LabelSampler(label_probabilities={0: 0, 1: 1, 2: 1, 3: 1})`` (centres drawn uniformly from
  the foreground voxels), ``Queue(samples_per_volume=patches_per_subject, num_workers=0)``, read by a
  ``torch.utils.data.DataLoader(batch_size=batch_size, num_workers=0)``.

Each timed run includes building the sampler/queue (ours: its index; torchio: the queue) and reading
every batch; the subjects themselves (``PatchSubject`` / ``tio.Subject``) are built once, untimed.
Runs are interleaved and the median of ``repeats`` is reported.

Run: ``.venv/bin/python -m benchmarks.bench_sampler_torchio [--quick]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bench.patching.sampler import PatchSampler, PatchSubject
from benchmarks import BenchSubject, load_subjects, rounded, time_interleaved


def ours_runner(subjects: Sequence[PatchSubject], patch: int, batch_size: int, total: int,
                seed: int = 0) -> Callable[[], int]:
    """Build a random-mode ``PatchSampler`` and read one epoch; returns the patch count."""

    def run() -> int:
        sampler = PatchSampler(subjects, patch, batch_size=batch_size, seed=seed, mode="random",
                               patches_per_epoch=total)
        return sum(len(batch.image) for batch in sampler.batches(0))

    return run


def torchio_runner(subjects: Sequence[Any], patch: int, batch_size: int, per_subject: int) -> Callable[[], int]:
    """Build a torchio ``Queue`` with a foreground ``LabelSampler`` and read it once; returns the patch count."""
    import torchio as tio

    dataset = tio.SubjectsDataset(list(subjects))
    probabilities = {0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0}

    def run() -> int:
        sampler = tio.LabelSampler(patch, label_name="label", label_probabilities=probabilities)
        queue = tio.Queue(dataset, max_length=per_subject, samples_per_volume=per_subject, sampler=sampler,
                          num_workers=0, shuffle_subjects=True, shuffle_patches=True)
        loader = torch.utils.data.DataLoader(queue, batch_size=batch_size, num_workers=0)
        return sum(int(batch["image"][tio.DATA].shape[0]) for batch in loader)

    return run


def torchio_subject(subject: BenchSubject) -> Any:
    """The subject as a ``tio.Subject`` of in-memory tensors (spacing in the affine)."""
    import torchio as tio

    affine = np.diag([*subject.spacing_mm, 1.0])
    return tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(subject.image[None]), affine=affine),
                       label=tio.LabelMap(tensor=torch.from_numpy(subject.label[None]), affine=affine))


def run(subjects: Sequence[BenchSubject], *, patch: int = 32, batch_size: int = 8, patches_per_subject: int = 64,
        repeats: int = 3) -> dict[str, Any]:
    """Time both samplers producing the same number and size of foreground patches.

    Returns:
        A JSON-ready dict: patches/s of each, the speedup and the settings.
    """
    total = patches_per_subject * len(subjects)
    ours_subjects = [PatchSubject(image=s.image, label=s.label, mask=s.mask, id=s.id) for s in subjects]
    tio_subjects = [torchio_subject(s) for s in subjects]
    timed = time_interleaved({
        "ours": ours_runner(ours_subjects, patch, batch_size, total),
        "torchio": torchio_runner(tio_subjects, patch, batch_size, patches_per_subject),
    }, repeats=repeats, warmup=1)
    medians, counts = timed.wall, timed.results
    if counts["ours"] != total or counts["torchio"] != total:
        raise RuntimeError(f"patch counts differ: ours {counts['ours']}, torchio {counts['torchio']}, "
                           f"expected {total}")
    ours_rate, tio_rate = total / medians["ours"], total / medians["torchio"]
    return {
        "sampler_patches_per_s": rounded(ours_rate),
        "torchio_patches_per_s": rounded(tio_rate),
        "sampler_speedup_vs_torchio": rounded(ours_rate / tio_rate),
        "sampler_patches_per_cpu_s": rounded(total / timed.cpu["ours"]),
        "torchio_patches_per_cpu_s": rounded(total / timed.cpu["torchio"]),
        "settings": {
            "subjects": [s.id for s in subjects], "volume_shape": list(subjects[0].image.shape),
            "patch": patch, "batch_size": batch_size, "patches": total,
            "patches_per_subject": patches_per_subject, "repeats": repeats, "num_workers": 0,
            "ours": "PatchSampler(mode='random'), centres uniform in label > 0",
            "torchio": "Queue(max_length=samples_per_volume) + LabelSampler({0: 0, 1: 1, 2: 1, 3: 1})",
            "times": timed.lists(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny synthetic subjects")
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--patches-per-subject", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    subjects = load_subjects(2 if args.quick else args.subjects, quick=args.quick)
    result = run(subjects, patch=16 if args.quick else 32, patches_per_subject=args.patches_per_subject,
                 repeats=args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
