"""What the training benchmarks share: the optimizer, loss and TrainSpec they fit with, torch thread scopes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.contract import EarlyStoppingSpec, LossSpec, OptimizerSpec, SchedulerSpec, TrainSpec

REPO = Path(__file__).resolve().parents[1]
OPTIMIZER = OptimizerSpec("adam", lr=1e-3)
LOSS = LossSpec("dice")


def train_spec(steps: int, epochs: int, threads: int, precision: str = "fp32") -> TrainSpec:
    """What the benchmark fits with: Adam, Dice, no scheduler or early stopping, no progress bar; fp32 unless
    ``precision`` says otherwise."""
    return TrainSpec(epochs=epochs, steps_per_epoch=steps, optimizer=OPTIMIZER,
                     scheduler=SchedulerSpec(factor=1.0, patience=0), loss=LOSS,
                     early_stopping=EarlyStoppingSpec(patience=0), num_threads=threads, progress=False,
                     precision=precision)  # type: ignore[arg-type]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch uses ``count`` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
