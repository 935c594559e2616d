"""Framework-neutral helpers shared by the adapter tests (tests/test_adapters.py, tests/test_adapters_parity.py, tests/test_registry.py):
a nested-spheres toy problem, a crop PatchSource, a recording logger, a quick TrainSpec, numpy loss oracles and
parameter counts by hand from the spec. Nothing here imports a framework."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bench.contract import (
    EarlyStoppingSpec,
    EpochRecord,
    LossSpec,
    OptimizerSpec,
    PatchBatch,
    SchedulerSpec,
    TrainSpec,
)
from bench.networks.configs import NetConfig, NeuroNetConfig, UNet3DConfig, VNetConfig

FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
CONFIGS: dict[str, type[NetConfig]] = {"unet3d": UNet3DConfig, "vnet": VNetConfig, "neuronet": NeuroNetConfig}
ARCHITECTURES = list(CONFIGS)
# What each config's tiny() is: the small networks of the tests where the architecture's size does not matter.
TINY: dict[str, dict[str, Any]] = {
    "unet3d": {"base_filters": 4, "depth": 3},
    "vnet": {"widths": (4, 8, 16, 32), "convs": (1, 1, 1, 1), "kernel_size": 3},
    "neuronet": {"filters": (4, 8, 16, 32), "units_per_scale": 1},
}


def quick_spec(framework: str = "torch", **changes: Any) -> TrainSpec:
    """Two quiet epochs of Adam (lr 1e-2) on Dice + CE, seed 0, no scheduler, no early stopping.

    torch trains on one thread (its thread count is a process setting that a fit applies); TF keeps its
    default pools (``num_threads=0``): they are fixed once TF has started, and asking again only warns.
    """
    base: dict[str, Any] = {
        "epochs": 2, "optimizer": OptimizerSpec(name="adam", lr=1e-2), "loss": LossSpec(name="dice_ce"),
        "scheduler": SchedulerSpec(factor=1.0), "early_stopping": EarlyStoppingSpec(patience=0),
        "num_threads": 1 if framework == "torch" else 0, "progress": False, "seed": 0,
    }
    return TrainSpec(**(base | changes))


def spheres(size: int = 32, noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 image and int64 labels: class c has intensity c - 1.5 plus Gaussian noise."""
    grid = np.indices((size,) * 3).astype(np.float32) - (size - 1) / 2
    radius = np.sqrt((grid**2).sum(axis=0))
    label = np.zeros((size,) * 3, np.int64)
    for cls, r in ((1, 14), (2, 10), (3, 6)):
        label[radius < r] = cls
    rng = np.random.default_rng(seed)
    image = label.astype(np.float32) - 1.5 + rng.normal(0, noise, label.shape).astype(np.float32)
    return image, label


class CropSource:
    """A PatchSource of random cubic crops (seeded per epoch, or the same every epoch) of one volume."""

    def __init__(self, image: np.ndarray, label: np.ndarray, patch: int, batch_size: int, steps: int,
                 seed: int = 0, fixed: bool = False) -> None:
        self.image, self.label = image, label
        self.patch_size = (patch, patch, patch)
        self.batch_size, self.steps, self.seed, self.fixed = batch_size, steps, seed, fixed

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        rng = np.random.default_rng((self.seed, 0 if self.fixed else epoch))
        p = self.patch_size[0]
        for _ in range(self.steps):
            starts = rng.integers(0, self.image.shape[0] - p + 1, size=(self.batch_size, 3))
            crops = [tuple(slice(s, s + p) for s in start) for start in starts]
            image = np.stack([self.image[c] for c in crops])[:, None]
            yield PatchBatch(np.ascontiguousarray(image), np.stack([self.label[c] for c in crops]))


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[EpochRecord] = []

    def log_epoch(self, record: EpochRecord) -> None:
        self.records.append(record)


def foreground_dice(pred: np.ndarray, label: np.ndarray) -> float:
    scores = [2 * np.sum((pred == c) & (label == c)) / (np.sum(pred == c) + np.sum(label == c)) for c in (1, 2, 3)]
    return float(np.mean(scores))


def conv(k: int, c_in: int, c_out: int) -> int:
    """Weights and bias of a k³ conv (or transposed conv)."""
    return k**3 * c_in * c_out + c_out


def norm_params(norm: str, c: int) -> int:
    if norm == "instance_layer":
        return 3 * c  # scale, shift and the IN share rho per channel
    return 0 if norm == "none" else 2 * c  # trainable scale + shift per channel (batch and instance alike)


def unet3d_count(in_ch: int = 1, k: int = 4, base: int = 32, depth: int = 4, convs: int = 1, skip: str = "add",
                 norm: str = "none", block: str = "plain", deep_supervision: int = 0) -> int:
    f = [base * 2**i for i in range(depth)]

    def level(c_in: int, c: int) -> int:
        plain = conv(3, c_in, c) + norm_params(norm, c) + (convs - 1) * (conv(3, c, c) + norm_params(norm, c))
        projection = conv(1, c_in, c) if block == "residual" and c_in != c else 0  # 1x1x1 shortcut
        return plain + projection

    encoder = level(in_ch, f[0]) + sum(level(f[i - 1], f[i]) for i in range(1, depth))
    merged = 2 if skip == "concat" else 1
    decoder = sum(conv(2, f[i + 1], f[i]) + level(merged * f[i], f[i]) for i in range(depth - 1))
    heads = conv(1, f[0], k) + sum(conv(1, f[i], k) for i in range(1, deep_supervision + 1))
    return encoder + decoder + heads


def vnet_count(in_ch: int = 1, k: int = 4, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
               convs: tuple[int, ...] = (1, 2, 3, 3, 3), kernel: int = 5) -> int:
    w, n = widths, convs
    total = conv(1, in_ch, w[0])  # stage-0 projection
    for i in range(len(w)):
        if i > 0:
            total += conv(2, w[i - 1], w[i]) + w[i]  # strided down conv + PReLU (one slope per channel)
        total += n[i] * (conv(kernel, w[i], w[i]) + w[i])
    for i in range(len(w) - 1):
        total += conv(2, w[i + 1], w[i]) + w[i]  # transposed conv + PReLU
        total += conv(kernel, 2 * w[i], w[i]) + w[i] + (n[i] - 1) * (conv(kernel, w[i], w[i]) + w[i])
    return total + conv(1, w[0], k)


def neuronet_count(in_ch: int = 1, k: int = 4, filters: tuple[int, ...] = (16, 32, 64, 128),
                   strides: tuple[int, ...] = (1, 2, 2, 2), units: int = 2, norm: str = "batch") -> int:
    def unit(c_in: int, f: int, s: int) -> int:
        shortcut = 0 if (s == 1 and c_in == f) else conv(1, c_in, f)
        return norm_params(norm, c_in) + conv(3, c_in, f) + norm_params(norm, f) + conv(3, f, f) + shortcut

    f = filters
    total = conv(3, in_ch, f[0])
    for j in range(len(f)):
        total += unit(f[j - 1] if j else f[0], f[j], strides[j]) + (units - 1) * unit(f[j], f[j], 1)
    for j in range(len(f) - 1):
        total += conv(strides[j + 1] if strides[j + 1] > 1 else 1, f[j + 1], f[j]) + unit(f[j], f[j], 1)
    return total + norm_params(norm, f[0]) + conv(1, f[0], k)


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def np_dice_loss(logits: np.ndarray, labels: np.ndarray, smooth: float, reduction: str = "sample") -> float:
    """Eq. 2 by loops: one Dice per (sample, class), or with ``reduction="batch"`` one per class over the batch."""
    p = np.exp(np_log_softmax(logits))
    batch, classes = logits.shape[:2]
    groups = [[b] for b in range(batch)] if reduction == "sample" else [list(range(batch))]
    scores = []
    for samples in groups:
        for c in range(classes):
            pc = p[samples, c]
            g = (labels[samples] == c).astype(np.float64)
            scores.append((2 * np.sum(pc * g) + smooth) / (np.sum(pc**2) + np.sum(g**2) + smooth))
    return 1.0 - float(np.mean(scores))


def np_ce_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    logp = np_log_softmax(logits)
    return -float(np.mean(np.take_along_axis(logp, labels[:, None], axis=1)))


# Default-argument parameter counts, as the paper's architectures have them (both frameworks must match).
DEFAULT_COUNTS = {"unet3d": 2_087_812, "vnet": 43_934_020, "neuronet": 2_451_060}
COUNTERS: dict[str, Callable[[], int]] = {"unet3d": unet3d_count, "vnet": vnet_count, "neuronet": neuronet_count}
