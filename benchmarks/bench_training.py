"""Training speed: the adapters' loop vs bare steps, achieved GFLOP/s, the settings that move it.

- Overhead: the adapter's ``fit`` (epochs of ``steps`` batches from a ``PatchSampler``, the real
  training path) vs a bare loop of zero_grad/forward/loss/backward/optimizer step over the same batches,
  already in memory as tensors, on a twin network. The bare loop runs just before each fit epoch (from
  inside the patch source), so every pair sees the same machine load; ``overhead = 1 - bare / fit`` per
  pair, median over pairs (time outside the network's step). The sampler's own time inside ``fit`` is
  measured too (a direct, steadier figure).
- FLOPs per training patch of the 3D U-Net, counted from its convolution shapes: ``2·k³·c_in·c_out`` per
  output voxel of a convolution (per input voxel of a transposed one); backward = weight gradients + input
  gradients, the first convolution's input (the image) getting none (``training_flops``).
  Achieved GFLOP/s = FLOPs per patch × patches/s, against the matmul peak of the same dtype at the same
  thread count (4096², best of the repeats); ``sanity`` flags any figure above its peak.
- Precision: the adapters' fit in fp32 and in bf16 (torch autocast, Keras ``mixed_bfloat16``), alternated.
- Norms: the adapters' fit per ``model.params.norm`` (none, batch, instance, instance-layer), in the precision
  ``auto`` picks.
- Settings (bare torch steps, interleaved): threads 1 vs all, channels_last_3d, batch size, oneDNN
  (mkldnn) off; torch.compile in a subprocess with a timeout; TF with and without XLA (``jit_compile``).
- ``bench train-speed`` for every architecture × framework at default settings (subprocesses).

Run: ``.venv/bin/python -m benchmarks.bench_training [--quick]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from bench.hardware import resolve_for_run
from bench.networks.configs import NORMS
from benchmarks import BenchSubject, load_subjects, rounded
from benchmarks.training_flops import cpu_peak_gflops, peak_for, training_flops_per_patch
from benchmarks.training_overhead import tf_overhead, torch_overhead
from benchmarks.training_precision import precision_speed
from benchmarks.training_settings import compile_probe, run_compile_probe, tf_xla, torch_settings


def run(subjects: Sequence[BenchSubject], *, base_filters: int = 16, depth: int = 4, patch: int = 32,
        batch_size: int = 8, steps: int = 8, repeats: int = 3, threads: int = 0, tensorflow: bool = True,
        compile_timeout_s: float = 300.0, peak_size: int = 4096, xla: bool = True,
        overhead_repeats: int | None = None, precision_rounds: int = 2, norm_rounds: int = 1) -> dict[str, Any]:
    """Overhead, GFLOP/s and settings for the 3D U-Net (``base_filters``, ``depth``) at ``patch``³, ``batch_size``.

    Args:
        subjects: Training subjects for the patch sampler.
        steps: Training steps per timed epoch.
        repeats: Timed repetitions of each measurement (medians).
        threads: torch/TF threads for ``fit`` (0 = all cores).
        tensorflow: Also measure the TF adapter (overhead, patches/s, XLA).
        compile_timeout_s: Limit for the torch.compile subprocess (0 skips it).
        peak_size: Matrix size of the matmul peak.
        xla: Also time the TF step with XLA (compiling it takes a while).
        overhead_repeats: Fit/bare pairs for the overhead (default ``repeats``).
        precision_rounds: fp32/bf16 fits of each framework for the precision comparison (0 skips it).
        norm_rounds: Fits per normalisation for the ``norm_speed`` comparison (0 skips it).
    """
    from adapters.torch.steps import available_cores
    from bench.training.frameworks import build

    net = build("unet3d", "torch", base_filters=base_filters, depth=depth).net  # type: ignore[attr-defined]
    flops = training_flops_per_patch(net, (patch, patch, patch))
    train_flops = flops.train
    peak = cpu_peak_gflops(peak_size, threads=threads)
    fit_threads = threads or available_cores()
    shared = {"base_filters": base_filters, "depth": depth, "patch": patch, "batch_size": batch_size,
              "repeats": repeats}
    pairs = {**shared, "repeats": overhead_repeats or repeats}
    torch_fit = torch_overhead(subjects, steps=steps, threads=threads, **pairs)
    result: dict[str, Any] = {
        "train_step_overhead_fraction": torch_fit["overhead_fraction"],
        "unet3d_torch_train_patches_per_s": torch_fit["fit_train_patches_per_s"],
        "achieved_gflops_torch": rounded(train_flops * torch_fit["fit_train_patches_per_s"] / 1e9),
        "achieved_gflops_torch_bare": rounded(train_flops * torch_fit["bare_patches_per_s"] / 1e9),
        "cpu_peak_gflops": peak["cpu_peak_gflops"],
        "cpu_peak_gflops_bf16": peak["cpu_peak_gflops_bf16"],
        "unet3d_forward_gflop_per_patch": rounded(flops.forward / 1e9),
        "unet3d_backward_gflop_per_patch": rounded(flops.backward / 1e9),
        "unet3d_train_gflop_per_patch": rounded(train_flops / 1e9),
        "unet3d_train_gflop_per_patch_3x_forward": rounded(3 * flops.forward / 1e9),
        "peak": peak,
        "torch_overhead": torch_fit,
    }
    checks = [("torch fp32, adapter fit", result["achieved_gflops_torch"], "fp32", fit_threads),
              ("torch fp32, bare steps", result["achieved_gflops_torch_bare"], "fp32", fit_threads)]
    settings = torch_settings(**shared)
    for row in settings:
        row["gflops"] = rounded(train_flops * row["patches_per_s"] / 1e9)
        checks.append((f"torch fp32, {row['setting']}", row["gflops"], "fp32", row["threads"]))
    result["torch_settings"] = settings
    if compile_timeout_s > 0:
        result["torch_compile"] = run_compile_probe(base_filters=base_filters, depth=depth, patch=patch,
                                                    batch=batch_size, repeats=repeats, threads=threads,
                                                    timeout_s=compile_timeout_s)
    frameworks = ["torch", "tf"] if tensorflow else ["torch"]
    if precision_rounds > 0:
        result["precision"] = {}
        for framework in frameworks:
            speed = precision_speed(subjects, framework=framework, base_filters=base_filters, depth=depth,
                                    patch=patch, batch_size=batch_size, steps=steps, rounds=precision_rounds,
                                    threads=fit_threads)
            result["precision"][framework] = speed
            for dtype in ("fp32", "bf16"):
                result[f"unet3d_{framework}_train_patches_per_s_{dtype}"] = speed[dtype]
                gflops = None if speed[dtype] is None else rounded(train_flops * speed[dtype] / 1e9)
                result[f"achieved_gflops_{framework}_{dtype}"] = gflops
                if gflops is not None:  # bf16 is not measured on a CPU without native bf16: no check to make
                    checks.append((f"{framework} {dtype}, adapter fit (precision comparison)", gflops, dtype,
                                   fit_threads))
            result[f"unet3d_{framework}_bf16_speedup"] = speed.get("speedup_bf16")
    if norm_rounds > 0:
        result["norm_speed"] = norm_speed(subjects, frameworks, base_filters=base_filters, depth=depth, patch=patch,
                                          batch_size=batch_size, steps=steps, rounds=norm_rounds, threads=fit_threads)
    if tensorflow:
        tf_fit = tf_overhead(subjects, steps=steps, threads=threads, **pairs)
        result.update({
            "unet3d_tf_train_patches_per_s": tf_fit["fit_train_patches_per_s"],
            "achieved_gflops_tf": rounded(train_flops * tf_fit["fit_train_patches_per_s"] / 1e9),
            "train_step_overhead_fraction_tf": tf_fit["overhead_fraction"],
            "tf_overhead": tf_fit,
        })
        checks.append(("tf fp32, adapter fit", result["achieved_gflops_tf"], "fp32", fit_threads))
        if xla:
            result["tf_xla"] = tf_xla(base_filters=base_filters, depth=depth, patch=patch, batch=batch_size,
                                      repeats=repeats)
        for row in result.get("tf_xla", {}).get("rows", []):
            row["gflops"] = rounded(train_flops * row["patches_per_s"] / 1e9)
            checks.append((f"tf fp32, {row['setting']}", row["gflops"], "fp32", fit_threads))
    result["sanity"] = sanity(checks, peak)
    result["achieved_le_peak"] = result["sanity"]["achieved_le_peak"]
    result["settings"] = {**shared, "overhead_pairs": overhead_repeats or repeats, "steps_per_epoch": steps,
                          "threads": threads or "all cores", "model": f"unet3d base_filters={base_filters} depth={depth}",
                          "optimizer": "adam lr=1e-3", "loss": "dice", "sampler": "grid, step patch/2"}
    return result


def norm_speed(subjects: Sequence[BenchSubject], frameworks: Sequence[str], *, base_filters: int, depth: int,
               patch: int, batch_size: int, steps: int, rounds: int, threads: int) -> dict[str, Any]:
    """Training patches/s of the U-Net per ``model.params.norm`` (none, batch, instance, instance_layer), per
    framework, in the precision ``auto`` picks for it on this CPU (``precision`` in the result)."""
    table: dict[str, Any] = {"precision": {}}
    for framework in frameworks:
        precision = resolve_for_run("auto", framework=framework, device="cpu")
        table["precision"][framework] = precision
        table[framework] = {
            norm: precision_speed(subjects, framework=framework, base_filters=base_filters, depth=depth, patch=patch,
                                  batch_size=batch_size, steps=steps, rounds=rounds, threads=threads,
                                  precisions=(precision,), norm=norm)[precision]
            for norm in NORMS}
    return table


def sanity(checks: Sequence[tuple[str, float | None, str, int]], peak: dict[str, Any]) -> dict[str, Any]:
    """Every achieved GFLOP/s against the matmul peak of its dtype and thread count.

    Achieved above peak means the FLOP count or the peak is wrong (or the figure ran on more threads than
    it says): ``achieved_le_peak`` is False and ``above_peak`` names the figures.

    Args:
        checks: ``(figure, achieved GFLOP/s or None, dtype, threads)``.
        peak: ``cpu_peak_gflops``'s result.
    """
    rows = []
    for figure, gflops, dtype, threads in checks:
        limit = peak_for(peak, dtype, threads)
        measured = gflops is not None and limit is not None
        rows.append({"figure": figure, "gflops": gflops, "dtype": dtype, "threads": threads, "peak_gflops": limit,
                     "fraction_of_peak": rounded(gflops / limit) if measured else None,  # type: ignore[operator]
                     "ok": gflops <= limit if measured else None})  # type: ignore[operator]
    above = [row["figure"] for row in rows if row["ok"] is False]
    return {"achieved_le_peak": not above, "above_peak": above, "checks": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network, volumes and repetitions")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile_probe:
        print(json.dumps(compile_probe(args.base_filters, args.depth, args.patch, args.batch, args.repeats)))
        return 0
    if args.quick:
        result = run(load_subjects(1, quick=True), base_filters=4, depth=3, patch=16, batch_size=2, steps=2,
                     repeats=1, threads=args.threads, compile_timeout_s=0, peak_size=512)
    else:
        result = run(load_subjects(2), base_filters=args.base_filters, depth=args.depth, patch=args.patch,
                     batch_size=args.batch, repeats=args.repeats, threads=args.threads)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
