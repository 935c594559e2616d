"""``bench train-speed``: training and inference patches/s of one architecture in one framework."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

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
    parser.add_argument("--arch", required=True, help="unet3d | vnet | neuronet")
    parser.add_argument("--framework", required=True, help="torch | tf")
    parser.add_argument("--patch", type=int, nargs="+", default=[32], help="patch size (1 or 3 ints)")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps (not timed)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when present, else CPU (the JSON says which ran)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (default), bf16, fp16 (CUDA) or auto (the JSON says which ran)")
    parser.add_argument("--param", action="append", default=[], help="network parameter name=value (repeatable)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.training import frameworks

    patch = tuple(args.patch * 3 if len(args.patch) == 1 else args.patch)
    if len(patch) != 3 or min(patch) < 1:
        raise ConfigError(f"--patch {args.patch} must be 1 or 3 positive integers")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        raise ConfigError("--batch and --steps must be >= 1 and --warmup >= 0")
    frameworks.configure_threads(args.framework, args.threads)  # before the model: TF fixes its pools at start
    segmenter = frameworks.build(args.arch, args.framework, **_parse_params(args.param))
    spec = TrainSpec(
        epochs=2, steps_per_epoch=None, optimizer=OptimizerSpec("adam", lr=1e-4),
        scheduler=SchedulerSpec(factor=1.0, patience=0), loss=LossSpec("dice"),
        early_stopping=EarlyStoppingSpec(patience=0), num_threads=args.threads, progress=False,
        device=args.device, precision=args.precision,
    )
    # Epoch 1 is the warm-up (graph tracing, allocator); epoch 2 is timed by the adapter.
    source = _TwoPhase(patch, args.batch, args.warmup, args.steps)
    history = segmenter.fit(source, None, spec, NullLogger())
    timed = history.epochs[-1]
    batch = source.image
    for _ in range(max(1, args.warmup)):
        segmenter.predict_patches(batch)
    repeats = max(3, args.steps)
    start = time.perf_counter()
    for _ in range(repeats):
        segmenter.predict_patches(batch)
    infer = repeats * args.batch / (time.perf_counter() - start)
    print(json.dumps({"train_patches_per_s": round(timed.patches_per_s, 3),
                      "infer_patches_per_s": round(infer, 3),
                      "architecture": args.arch, "framework": args.framework, "patch": list(patch),
                      "batch": args.batch, "parameters": segmenter.describe().get("trainable_parameters"),
                      "device": segmenter.describe().get("device"),
                      "precision": segmenter.describe().get("precision")}))
    return 0


class _TwoPhase(RandomPatches):
    """Epoch 0 yields the warm-up steps, epoch 1 the timed steps."""

    def __init__(self, patch: tuple[int, int, int], batch_size: int, warmup: int, steps: int) -> None:
        super().__init__(patch, batch_size, steps)
        self.warmup = max(1, warmup)

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        for _ in range(self.warmup if epoch == 0 else self.steps):
            yield PatchBatch(self.image, self.label)
