"""``bench train-speed``: training and inference patches/s, and the process's peak memory, of one architecture
(or one Table 1 row's network as a profile configures it) in one framework. Run each measurement in a fresh
process, one at a time: two measurements sharing a machine slow each other down."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.contract import (
    EarlyStoppingSpec,
    LossSpec,
    NullLogger,
    OptimizerSpec,
    PatchBatch,
    SchedulerSpec,
    TrainSpec,
)
from bench.errors import ConfigError
from bench.hardware import PRECISIONS

if TYPE_CHECKING:
    from bench.contract import Segmenter


class RandomPatches:
    """A PatchSource of random images/labels (timing only)."""

    def __init__(self, patch: tuple[int, int, int], batch_size: int, steps: int, seed: int = 0) -> None:
        self.patch_size = patch
        self.batch_size = batch_size
        self.steps = steps
        rng = np.random.default_rng(seed)
        self.image = rng.standard_normal((batch_size, 1, *patch), dtype=np.float32)
        self.label = rng.integers(0, 4, size=(batch_size, *patch), dtype=np.int64)

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        for _ in range(self.steps):
            yield PatchBatch(self.image, self.label)

    def __len__(self) -> int:
        return self.steps


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r} must look like name=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "train-speed", help="measure training and inference patches/s (JSON)",
        description="Train on random patches and time it after warm-up; prints "
        '{"train_patches_per_s": ..., "infer_patches_per_s": ...}.',
    )
    parser.add_argument("--arch", help="unet3d | vnet | neuronet (or --row)")
    parser.add_argument("--row", type=int, help="a Table 1 row: its network, loss, optimizer, patch, batch and "
                        "precision as --profile configures them (options given explicitly win)")
    parser.add_argument("--profile", default="quick", help="the profile of --row (default: %(default)s)")
    parser.add_argument("--framework", required=True, help="torch | tf")
    parser.add_argument("--patch", type=int, nargs="+", help="patch size (1 or 3 ints; default 32, or the row's)")
    parser.add_argument("--batch", type=int, help="batch size (default 8, or the row's)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps (not timed)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when present, else CPU (the JSON says which ran)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp32 (default, or the row's), bf16, fp16 (CUDA) or auto (the JSON says which ran)")
    parser.add_argument("--param", action="append", default=[], help="network parameter name=value (repeatable)")
    return parser


def _row_network(args: argparse.Namespace) -> tuple[Segmenter, TrainSpec, tuple[int, ...], int]:
    """Table 1 row ``args.row`` as ``args.profile`` configures it in ``args.framework``: the untrained network, its
    training spec (precision and threads from the options when given) and its patch and batch size."""
    from bench.config import run_spec_from_config
    from bench.sweeps import compose_config, to_container
    from bench.training import frameworks

    overrides = [f"+experiment=table1/row{args.row}", f"profile={args.profile}", f"framework={args.framework}"]
    if args.precision is not None:
        overrides.append(f"profile.precision={args.precision}")
    network = run_spec_from_config(to_container(compose_config(overrides))).network
    threads = args.threads or network.train.num_threads
    frameworks.configure_threads(args.framework, threads)  # before the model: TF fixes its pools at start
    spec = replace(network.train, epochs=2, steps_per_epoch=None, early_stopping=EarlyStoppingSpec(patience=0),
                   scheduler=SchedulerSpec(factor=1.0, patience=0), num_threads=threads, progress=False,
                   device=args.device)
    segmenter = frameworks.build_network(network.entry, network.config, args.framework)
    return segmenter, spec, network.sampling.patch_size, network.sampling.batch_size


def run(args: argparse.Namespace) -> int:
    from bench.processes import PeakMemory
    from bench.training import frameworks

    if (args.arch is None) == (args.row is None):
        raise ConfigError("give --arch or --row (one of them)", fix="e.g. bench train-speed --row 9 --framework tf")
    with PeakMemory() as memory:
        if args.row is not None:
            segmenter, spec, row_patch, row_batch = _row_network(args)
        else:
            frameworks.configure_threads(args.framework, args.threads)  # before the model: TF fixes its pools
            segmenter = frameworks.build(args.arch, args.framework, **_parse_params(args.param))
            spec = TrainSpec(
                epochs=2, steps_per_epoch=None, optimizer=OptimizerSpec("adam", lr=1e-4),
                scheduler=SchedulerSpec(factor=1.0, patience=0), loss=LossSpec("dice"),
                early_stopping=EarlyStoppingSpec(patience=0), num_threads=args.threads, progress=False,
                device=args.device, precision=args.precision or "fp32",
            )
            row_patch, row_batch = (32, 32, 32), 8
        patch = tuple(row_patch if not args.patch else args.patch * 3 if len(args.patch) == 1 else args.patch)
        batch_size = args.batch or row_batch
        if len(patch) != 3 or min(patch) < 1:
            raise ConfigError(f"--patch {args.patch} must be 1 or 3 positive integers")
        if batch_size < 1 or args.steps < 1 or args.warmup < 0:
            raise ConfigError("--batch and --steps must be >= 1 and --warmup >= 0")
        # Epoch 1 is the warm-up (graph tracing, allocator); epoch 2 is timed by the adapter.
        source = _TwoPhase((patch[0], patch[1], patch[2]), batch_size, args.warmup, args.steps)
        history = segmenter.fit(source, None, spec, NullLogger())
        timed = history.epochs[-1]
        batch = source.image
        for _ in range(max(1, args.warmup)):
            segmenter.predict_patches(batch)
        repeats = max(3, args.steps)
        start = time.perf_counter()
        for _ in range(repeats):
            segmenter.predict_patches(batch)
        infer = repeats * batch_size / (time.perf_counter() - start)
    described = segmenter.describe()
    print(json.dumps({"train_patches_per_s": round(timed.patches_per_s, 3),
                      "infer_patches_per_s": round(infer, 3),
                      "architecture": described.get("architecture", args.arch), "row": args.row,
                      "profile": args.profile if args.row is not None else None,
                      "framework": args.framework, "patch": list(patch),
                      "batch": batch_size, "parameters": described.get("trainable_parameters"),
                      "device": described.get("device"), "precision": described.get("precision"),
                      "peak_memory_mb": round(memory.peak_mb, 1), "threads": spec.num_threads}))
    return 0


class _TwoPhase(RandomPatches):
    """Epoch 0 yields the warm-up steps, epoch 1 the timed steps."""

    def __init__(self, patch: tuple[int, int, int], batch_size: int, warmup: int, steps: int) -> None:
        super().__init__(patch, batch_size, steps)
        self.warmup = max(1, warmup)

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        for _ in range(self.warmup if epoch == 0 else self.steps):
            yield PatchBatch(self.image, self.label)
