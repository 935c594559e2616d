"""``make bench``: run every benchmark, write ``runs/bench/results.json`` and ``runs/bench/report.md``.

Sections (each timed in this one process, after warm-up, as medians of interleaved repetitions):
``metrics`` (vs medpy), ``inference`` (vs MONAI), ``sampler`` (vs torchio, and the grid sampler alone),
``training`` (adapter overhead, fp32 vs bf16, GFLOP/s against per-dtype peaks with a ``sanity`` check, settings,
TF XLA, optional torch.compile), ``data_wait`` (the share of a training step spent waiting for its batch,
with and without prefetch, at GPU speed and on this CPU) and ``train_speed``
(``bench train-speed`` for the 6 architecture × framework pairs, in subprocesses with a timeout).

Data: synthetic subjects from ``bench.data.synth.generate_subject`` (IBSR grid 256×128×256); IBSR18 training
subjects when ``$IBSR18_ROOT`` names a folder. ``--quick`` runs everything on tiny volumes and networks
with one repetition (a smoke test of the suite, not a measurement). The report, the required figures and
their targets live in ``benchmarks.suite_report``.

Usage::

    .venv/bin/python -m benchmarks.suite [--quick] [--out runs/bench] [--threads N]
        [--skip SECTION ...] [--no-tf] [--no-full-volume] [--compile-timeout S] [--train-speed-timeout S]
        [--budget-min MIN]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.io import Volume, write_volume
from benchmarks import BenchSubject, load_subjects
from benchmarks.suite_report import DATA_WAIT_KEYS, PRECISION_KEYS, REQUIRED_KEYS, SECTIONS, render_report

DEFAULT_OUT = Path("runs/bench")


# ------------------------------------------------------------------------------------------- sections


def run_metrics(subjects: list[BenchSubject], quick: bool) -> dict[str, Any]:
    """``benchmarks.bench_metrics.run`` on the first subject's label map (5 repeats, 1 medpy repeat)."""
    from benchmarks import bench_metrics

    subject = subjects[0]
    if Path(subject.source).is_file():
        return bench_metrics.run(Path(subject.source), repeats=2 if quick else 5, medpy_repeats=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_volume(Volume(subject.label, subject.spacing_mm), Path(tmp) / f"{subject.id}_seg.nii.gz")
        result = bench_metrics.run(path, repeats=2 if quick else 5, medpy_repeats=1)
    result["source"] = subject.id
    return result


def run_inference(subjects: list[BenchSubject], quick: bool, full_volume: bool) -> dict[str, Any]:
    from benchmarks import bench_inference

    if quick:
        return bench_inference.run(subjects[0], base_filters=4, depth=3, patch=16, sw_batch_size=4, repeats=1)
    return bench_inference.run(subjects[0], base_filters=8, depth=4, patch=32, sw_batch_size=8, repeats=5,
                               full_volume=full_volume)


def run_sampler(subjects: list[BenchSubject], quick: bool) -> dict[str, Any]:
    from benchmarks import bench_patches, bench_sampler_torchio

    if quick:
        result = bench_sampler_torchio.run(subjects, patch=16, batch_size=4, patches_per_subject=16, repeats=1)
        grid = bench_patches.run(num_subjects=2, shape=(48, 32, 48), patch_size=16, step=8, batch_size=4,
                                 max_batches=10)
    else:
        result = bench_sampler_torchio.run(subjects, patch=32, batch_size=8, patches_per_subject=96, repeats=3)
        grid = bench_patches.run(num_subjects=4, max_batches=200)
    result["grid_sampler"] = grid
    return result


def run_training(subjects: list[BenchSubject], quick: bool, threads: int, tensorflow: bool,
                 compile_timeout_s: float) -> dict[str, Any]:
    from benchmarks import bench_training

    if quick:
        return bench_training.run(subjects, base_filters=4, depth=3, patch=16, batch_size=2, steps=2, repeats=1,
                                  threads=threads, tensorflow=tensorflow, compile_timeout_s=0, peak_size=1024,
                                  xla=False)
    return bench_training.run(subjects, base_filters=16, depth=4, patch=32, batch_size=8, steps=8, repeats=3,
                              overhead_repeats=5, threads=threads, tensorflow=tensorflow,
                              compile_timeout_s=compile_timeout_s)


def run_data_wait(subjects: list[BenchSubject], quick: bool, threads: int) -> dict[str, Any]:
    from benchmarks import training_prefetch

    if quick:
        return training_prefetch.data_wait(subjects, patch=16, batch_size=4, steps=4, epochs=2, rounds=1,
                                           cpu_base_filters=4, cpu_depth=2, cpu_batch_size=2, cpu_steps=2,
                                           threads=threads or 1)
    return training_prefetch.data_wait(subjects, threads=threads or 1)


def run_train_speed(timeout_s: float, threads: int, deadline: float) -> dict[str, Any]:
    from benchmarks import training_settings

    rows = training_settings.train_speed_all(steps=3, warmup=1, threads=threads, timeout_s=timeout_s, deadline=deadline)
    return {"rows": rows, "timeout_s": timeout_s, "threads": threads or "all cores",
            "command": f"bench train-speed --arch A --framework F --patch 32 --batch 8 --steps 3 --warmup 1 "
                       f"--threads {threads}"}


# ------------------------------------------------------------------------------------------- results


def headline(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The required top-level figures (``None`` for a section that was skipped or failed)."""
    out: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS + PRECISION_KEYS)
    for section in sections.values():
        for key in REQUIRED_KEYS + PRECISION_KEYS:
            if key in section:
                out[key] = section[key]
    training = sections.get("training", {})
    for key in DATA_WAIT_KEYS:
        out[key] = sections.get("data_wait", {}).get(key)
    for key in ("achieved_gflops_tf", "achieved_gflops_torch_bare", "train_step_overhead_fraction_tf",
                "unet3d_train_gflop_per_patch"):
        if key in training:
            out[key] = training[key]
    if "torch_overhead" in training:
        out["train_step_overhead_clock"] = training["torch_overhead"]["overhead_clock"]
        out["train_sampler_fraction_of_step"] = training["torch_overhead"]["sampler_fraction_of_fit"]
    sampler = sections.get("sampler", {})
    if "torchio_patches_per_s" in sampler:
        out["torchio_patches_per_s"] = sampler["torchio_patches_per_s"]
    inference = sections.get("inference", {})
    for key in ("inference_ratio_clock", "inference_ratio_vs_monai_wall", "inference_harness_ratio_vs_monai",
                "inference_f64_ratio_vs_monai", "full_volume_skip_fraction_patches", "full_volume_s_no_skip",
                "full_volume_s_skip", "full_volume_skip_saved_s", "full_volume_skip_saved_fraction"):
        if key in inference:
            out[key] = inference[key]
    return out


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    from bench.hardware import CPU_BF16_FLAGS, cpu_flags

    return {
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu_bf16_flags": sorted(set(CPU_BF16_FLAGS) & cpu_flags()),
        "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "threads_arg": threads, "load_average_start": list(os.getloadavg()),
    }


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections; a section that raises is recorded with its error, the others still run."""
    import torch

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    machine = machine_info(args.threads)
    skip = set(args.skip) | ({"train_speed"} if args.quick else set())
    wanted = [s for s in SECTIONS if s not in skip]
    subjects: list[BenchSubject] = []
    if set(wanted) & {"metrics", "inference", "sampler", "training", "data_wait"}:
        t0 = time.perf_counter()
        subjects = load_subjects(2, quick=args.quick)
        machine["subjects_s"] = round(time.perf_counter() - t0, 1)
        machine["subjects"] = [f"{s.id} {list(s.image.shape)} {s.source}" for s in subjects]
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "metrics": lambda: run_metrics(subjects, args.quick),
        "inference": lambda: run_inference(subjects, args.quick, args.full_volume),
        "sampler": lambda: run_sampler(subjects, args.quick),
        "training": lambda: run_training(subjects, args.quick, args.threads, not args.no_tf, args.compile_timeout),
        "data_wait": lambda: run_data_wait(subjects, args.quick, args.threads),
        "train_speed": lambda: run_train_speed(args.train_speed_timeout, args.threads,
                                               started + 60.0 * args.budget_min - 30.0),
    }
    sections: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for name in wanted:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            sections[name] = runners[name]()
        except Exception as exc:  # one broken comparison must not lose the others
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
        torch.set_num_threads(threads)  # an adapter's fit sets the process-wide thread count
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} done in {seconds[name]} s", file=sys.stderr, flush=True)
    machine["load_average_end"] = list(os.getloadavg())
    return {
        **headline(sections),
        "quick": args.quick,
        "skipped_sections": sorted(skip),
        "section_seconds": seconds,
        "total_s": round(time.perf_counter() - started, 1),
        "machine": machine,
        "sections": sections,
    }


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny volumes and networks, one repetition")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default runs/bench)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/TF threads for the comparisons and fits (0 = all cores; default 1: on a shared "
                        "2-core machine a second OpenMP thread mostly waits; the settings table measures both)")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections not to run")
    parser.add_argument("--no-tf", action="store_true", help="skip the TensorFlow measurements")
    parser.add_argument("--no-full-volume", dest="full_volume", action="store_false",
                        help="do not time mask skipping on the whole 256×128×256 volume (saves ~1-2 min)")
    parser.add_argument("--compile-timeout", type=float, default=240.0,
                        help="seconds allowed for the torch.compile probe, a subprocess (0 = skip; a cold compile "
                        "of the U-Net's training step took ~4.5 min here under load, ~6 s from inductor's cache)")
    parser.add_argument("--train-speed-timeout", type=float, default=180.0,
                        help="seconds allowed per `bench train-speed` run")
    parser.add_argument("--budget-min", type=float, default=25.0,
                        help="train-speed runs that would end after this many minutes of the suite are cut or "
                        "skipped")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_suite(args)
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(args.out / "results.json", json.dumps(_json_ready(results), indent=2) + "\n")
    _atomic_write(args.out / "report.md", render_report(results))
    summary = {k: results[k] for k in REQUIRED_KEYS}
    print(json.dumps(_json_ready(summary), indent=2))
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}", file=sys.stderr)
    return 0


def _json_ready(value: Any) -> Any:
    """NaN/inf as ``None`` and numpy scalars as Python numbers, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _atomic_write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


if __name__ == "__main__":
    sys.exit(main())
