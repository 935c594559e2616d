"""Timing: ``bench.patching.inference.predict_volume`` vs MONAI's ``sliding_window_inference``, same torch model.

Both tile the image with patches of ``patch``³ voxels, overlap 0.5, blend softmax probabilities with a
Gaussian importance map (sigma 0.125 × patch) and send ``sw_batch_size`` patches per network call; MONAI
pads with 0, so ours is called with ``pad_value=0.0``. The network is the torch adapter's 3D U-Net in
eval mode (random weights, seeded). Runs are interleaved (ours, MONAI, ..., in rotating order) and the
median of ``repeats`` is reported; with one torch thread the ratios use CPU seconds, which leave out
the time spent waiting for a shared core (wall seconds are reported too). Probabilities are compared
voxel by voxel.

By default the image is cropped to the brain bounding box (+4 voxels) for the comparison, because a
whole 256×128×256 volume is 1575 patches: minutes per run on 2 shared CPU cores. What skipping patches
outside the brain saves is counted on the whole volume and, with ``full_volume=True``, timed there
(one run with and one without the mask); otherwise estimated from the measured cost per patch.

A second comparison uses a 1×1×1 convolution as the "network", so that the time is the stitching itself.

``GridAggregator`` sums Gaussian-blended probabilities in float32, as MONAI does. Until 2026-11-24 it
summed them in float64 (ratio 1.17 vs MONAI); ``Float64GaussianAggregator`` keeps that variant, timed
alongside as ``ours_f64`` (swapped into ``bench.patching.inference`` for those runs only) to show the change.

Run: ``.venv/bin/python -m benchmarks.bench_inference [--quick]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import bench.patching.inference
from bench.patching.grid import GridAggregator, GridSampler
from bench.patching.inference import _outside_mask, predict_volume_with_stats
from bench.types import FloatArray
from benchmarks import BenchSubject, brain_box, load_subjects, rounded, time_interleaved

SIGMA_SCALE = 0.125
OVERLAP = 0.5


class Float64GaussianAggregator(GridAggregator):
    """``GridAggregator`` with float64 Gaussian sums: what it did before (kept to time the change)."""

    def __init__(self, sampler: GridSampler, num_channels: int, blending: Any = "mean",
                 sigma_scale: Any = 0.125) -> None:
        super().__init__(sampler, num_channels, blending, sigma_scale, accumulate_dtype=np.float64)


@contextlib.contextmanager
def aggregator(cls: type[GridAggregator]) -> Iterator[None]:
    """Make ``bench.patching.inference.predict_volume`` use ``cls`` inside the block."""
    before = bench.patching.inference.GridAggregator
    bench.patching.inference.GridAggregator = cls  # type: ignore[misc]
    try:
        yield
    finally:
        bench.patching.inference.GridAggregator = before  # type: ignore[misc]


def torch_predictor(net: torch.nn.Module) -> Callable[[FloatArray], FloatArray]:
    """numpy ``[B, C, X, Y, Z]`` -> softmax numpy, as ``TorchSegmenter.predict_patches`` does it."""

    def predict(batch: FloatArray) -> FloatArray:
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), dim=1).numpy()

    return predict


def monai_runner(net: torch.nn.Module, image: FloatArray, patch: int, sw_batch_size: int) -> Callable[[], FloatArray]:
    """A call of MONAI's ``sliding_window_inference`` on ``image[X, Y, Z]`` returning ``float32[K, X, Y, Z]``."""
    from monai.inferers import sliding_window_inference

    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]

    def run() -> FloatArray:
        with torch.inference_mode():
            out = sliding_window_inference(
                tensor, (patch, patch, patch), sw_batch_size, lambda x: torch.softmax(net(x), dim=1),
                overlap=OVERLAP, mode="gaussian", sigma_scale=SIGMA_SCALE, padding_mode="constant", cval=0.0,
            )
        return np.asarray(out[0].numpy(), dtype=np.float32)

    return run


def ours_runner(predict: Callable[[FloatArray], FloatArray], image: FloatArray, patch: int, sw_batch_size: int,
                mask: np.ndarray | None = None, aggregator_class: type[GridAggregator] = GridAggregator,
                ) -> Callable[[], tuple[FloatArray, Any]]:
    """A call of ``predict_volume_with_stats`` with MONAI's settings (optional mask skipping, aggregator)."""

    def run() -> tuple[FloatArray, Any]:
        with aggregator(aggregator_class):
            return predict_volume_with_stats(predict, image, patch, num_classes=4, overlap=OVERLAP,
                                             blending="gaussian", batch_size=sw_batch_size, mask=mask,
                                             sigma_scale=SIGMA_SCALE, pad_value=0.0)

    return run


def skip_count(mask: np.ndarray, patch: int) -> tuple[int, int]:
    """(patches, patches skipped) for a whole volume with this brain mask (bench.patching.inference's own rule)."""
    sampler = GridSampler(mask.shape, patch, OVERLAP)
    return len(sampler), int(_outside_mask(mask, sampler).sum())


def run(subject: BenchSubject, *, base_filters: int = 8, depth: int = 4, patch: int = 32, sw_batch_size: int = 8,
        repeats: int = 3, crop: bool = True, full_volume: bool = False) -> dict[str, Any]:
    """Time both implementations on one subject and compare their probabilities.

    Args:
        subject: Image and brain mask.
        base_filters, depth: The 3D U-Net (torch adapter) used by both.
        patch: Cubic patch size.
        sw_batch_size: Patches per network call, for both.
        repeats: Timed runs of each (interleaved); medians are reported (stitching only: 2·repeats + 1).
        crop: Crop to the brain bounding box (+4 voxels) for the timed comparison.
        full_volume: Also time skipping on the whole volume (one run each with and without the mask).
    """
    from bench.training import frameworks

    torch.manual_seed(0)
    segmenter: Any = frameworks.build("unet3d", "torch", base_filters=base_filters, depth=depth)
    net = segmenter.net.eval()
    box = brain_box(subject.mask) if crop else (slice(None),) * 3
    image = np.ascontiguousarray(subject.image[box])
    warm = tuple(slice(0, min(n, 2 * patch)) for n in image.shape)
    for fn in (ours_runner(segmenter.predict_patches, image[warm], patch, sw_batch_size),
               monai_runner(net, image[warm], patch, sw_batch_size)):
        fn()  # warm-up: oneDNN primitives for full and partial batches

    timed = time_interleaved({
        "ours": ours_runner(segmenter.predict_patches, image, patch, sw_batch_size),
        "monai": monai_runner(net, image, patch, sw_batch_size),
        "ours_f64": ours_runner(segmenter.predict_patches, image, patch, sw_batch_size,
                                aggregator_class=Float64GaussianAggregator),
    }, repeats=repeats, warmup=0)
    results = timed.results
    ours, stats = results["ours"]
    diff = float(np.abs(ours - results["monai"]).max())
    diff_f64 = float(np.abs(results["ours_f64"][0] - results["monai"]).max())

    pointwise = torch.nn.Conv3d(1, 4, 1).eval()
    harness_timed = time_interleaved({
        "ours": ours_runner(torch_predictor(pointwise), image, patch, sw_batch_size),
        "monai": monai_runner(pointwise, image, patch, sw_batch_size),
        "ours_f64": ours_runner(torch_predictor(pointwise), image, patch, sw_batch_size,
                                aggregator_class=Float64GaussianAggregator),
    }, repeats=2 * repeats + 1, warmup=1)

    # With one torch thread, CPU seconds measure the work without the time spent waiting for a shared
    # core: ratios use them (wall-clock ratios are reported too); seconds per volume are wall-clock.
    cpu_clock = torch.get_num_threads() == 1
    clock, harness = timed.best(cpu_clock), harness_timed.best(cpu_clock)
    s_per_patch = timed.wall["ours"] / stats.num_patches
    full_patches, full_skipped = skip_count(subject.mask, patch)
    result: dict[str, Any] = {
        "inference_s_per_volume": rounded(timed.wall["ours"]),
        "monai_s_per_volume": rounded(timed.wall["monai"]),
        "inference_ratio_vs_monai": rounded(clock["ours"] / clock["monai"]),
        "inference_max_abs_diff_vs_monai": diff,
        "inference_ratio_clock": "cpu" if cpu_clock else "wall",
        "inference_ratio_vs_monai_wall": rounded(timed.wall["ours"] / timed.wall["monai"]),
        "inference_ratio_vs_monai_cpu": rounded(timed.cpu["ours"] / timed.cpu["monai"]),
        "inference_patches": stats.num_patches,
        "inference_harness_ratio_vs_monai": rounded(harness["ours"] / harness["monai"]),
        "inference_f64_ratio_vs_monai": rounded(clock["ours_f64"] / clock["monai"]),
        "inference_f64_max_abs_diff_vs_monai": diff_f64,
        "inference_harness_f64_ratio_vs_monai": rounded(harness["ours_f64"] / harness["monai"]),
        "runs": {name: {"wall_s": rounded(timed.wall[name]), "cpu_s": rounded(timed.cpu[name])} for name in timed.wall},
        "harness_runs": {name: {"wall_s": rounded(harness_timed.wall[name]), "cpu_s": rounded(harness_timed.cpu[name])}
                         for name in harness_timed.wall},
        "full_volume_shape": list(subject.mask.shape),
        "full_volume_patches": full_patches,
        "full_volume_patches_skipped": full_skipped,
        "full_volume_skip_fraction_patches": rounded(full_skipped / full_patches),
        "full_volume_est_s_no_skip": rounded(full_patches * s_per_patch),
        "full_volume_est_s_skip": rounded((full_patches - full_skipped) * s_per_patch),
        "settings": {
            "subject": subject.id, "volume_shape": list(image.shape), "cropped_to_brain_box": crop,
            "model": f"unet3d base_filters={base_filters} depth={depth} (torch, eval, random weights)",
            "patch": patch, "overlap": OVERLAP, "blending": "gaussian", "sigma_scale": SIGMA_SCALE,
            "sw_batch_size": sw_batch_size, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "times": timed.lists(), "harness_times": harness_timed.lists(),
        },
    }
    if full_volume:
        result.update(_full_volume(segmenter.predict_patches, subject, patch, sw_batch_size))
    return result


def _full_volume(predict: Callable[[FloatArray], FloatArray], subject: BenchSubject, patch: int,
                 sw_batch_size: int) -> dict[str, Any]:
    timed = time_interleaved({
        "all": ours_runner(predict, subject.image, patch, sw_batch_size),
        "skip": ours_runner(predict, subject.image, patch, sw_batch_size, subject.mask),
    }, repeats=1, warmup=0)
    cpu_clock = torch.get_num_threads() == 1
    clock = timed.best(cpu_clock)
    return {"full_volume_s_no_skip": rounded(timed.wall["all"]), "full_volume_s_skip": rounded(timed.wall["skip"]),
            "full_volume_skip_saved_s": rounded(timed.wall["all"] - timed.wall["skip"]),
            "full_volume_skip_saved_fraction": rounded(1 - clock["skip"] / clock["all"]),
            "full_volume_runs": {name: {"wall_s": rounded(timed.wall[name]), "cpu_s": rounded(timed.cpu[name])}
                                 for name in timed.wall}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic volume and network")
    parser.add_argument("--base-filters", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-crop", action="store_true", help="time the whole volume")
    parser.add_argument("--full-volume", action="store_true", help="also time skipping on the whole volume")
    args = parser.parse_args(argv)
    subject = load_subjects(1, quick=args.quick)[0]
    patch, depth = (16, 3) if args.quick else (32, 4)
    result = run(subject, base_filters=4 if args.quick else args.base_filters, depth=depth, patch=patch,
                 repeats=args.repeats, crop=not args.no_crop, full_volume=args.full_volume)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
