"""The framework-neutral contract between bench/ and the adapters (no torch, no tensorflow here).

Arrays cross the boundary as channels-first numpy: ``float32[B, C, X, Y, Z]`` images in,
softmax probabilities ``float32[B, K, X, Y, Z]`` out, ``int64[B, X, Y, Z]`` labels for training.
Every hyperparameter is explicit in these specs: framework defaults (Keras Adadelta lr=0.001 vs torch
lr=1.0, Adam eps 1e-7 vs 1e-8, ...) must never leak into results.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np

from bench.errors import ConfigError
from bench.hardware import DEVICES, Precision, check_precision_name
from bench.types import FloatArray
from bench.validation import check_choice, check_keys, check_number, check_positive

OptimizerName = Literal["adam", "adadelta", "sgd"]
OPTIMIZERS: tuple[str, ...] = ("adam", "adadelta", "sgd")
LossName = Literal["dice", "ce", "dice_ce"]
LOSSES: tuple[str, ...] = ("dice", "ce", "dice_ce")
DiceReduction = Literal["sample", "batch"]
DICE_REDUCTIONS: tuple[str, ...] = ("sample", "batch")
Monitor = Literal["val_loss", "val_dice"]
MONITORS: tuple[str, ...] = ("val_loss", "val_dice")
KeepWeights = Literal["best", "last"]
KEEP_WEIGHTS: tuple[str, ...] = ("best", "last")


@dataclass(frozen=True)
class PatchBatch:
    """One training batch.

    Attributes:
        image: ``float32[B, C, X, Y, Z]`` intensities.
        label: ``int64[B, X, Y, Z]`` class indices in ``0..K-1``.
    """

    image: FloatArray
    label: np.ndarray

    def __post_init__(self) -> None:
        if self.image.ndim != 5 or self.label.ndim != 4:
            raise ValueError(f"PatchBatch needs image [B,C,X,Y,Z] and label [B,X,Y,Z], got "
                             f"{self.image.shape} and {self.label.shape}")
        if self.image.shape[0] != self.label.shape[0] or self.image.shape[2:] != self.label.shape[1:]:
            raise ValueError(f"PatchBatch image {self.image.shape} and label {self.label.shape} disagree")


@runtime_checkable
class PatchSource(Protocol):
    """A seeded, re-iterable stream of training (or validation) batches.

    ``batches(epoch)`` yields the same batches for the same (seed, epoch), whichever framework consumes
    them, so the framework is a fair factor of a comparison.
    """

    patch_size: tuple[int, int, int]
    batch_size: int

    def batches(self, epoch: int) -> Iterator[PatchBatch]: ...

    def __len__(self) -> int:
        """Number of batches one call to ``batches`` yields."""
        ...


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer with every hyperparameter explicit.

    ``betas`` are used by Adam; ``rho`` by Adadelta; ``momentum`` by SGD. ``eps`` is used as given.
    """

    name: OptimizerName = "adam"
    lr: float = 1e-3
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    rho: float = 0.9
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def from_section(cls, cfg: Mapping[str, Any]) -> OptimizerSpec:
        """The ``optimizer`` config section: ``name`` and ``lr`` required, the rest defaulted; ConfigError naming
        an unknown key or a bad value."""
        check_keys("optimizer", cfg, [f.name for f in fields(cls)])
        values: dict[str, Any] = {"name": check_choice("optimizer.name", cfg.get("name"), OPTIMIZERS),
                                  "lr": float(check_positive("optimizer.lr", cfg.get("lr")))}
        for key in ("eps", "rho", "momentum", "weight_decay"):
            if key in cfg:
                values[key] = check_number(f"optimizer.{key}", cfg[key])
        if "betas" in cfg:
            betas = cfg["betas"]
            if not isinstance(betas, (list, tuple)) or len(betas) != 2:
                raise ConfigError(f"optimizer.betas={betas!r} must be two numbers", fix="e.g. [0.9, 0.999]")
            values["betas"] = (check_number("optimizer.betas", betas[0]), check_number("optimizer.betas", betas[1]))
        return cls(**values)

    def __post_init__(self) -> None:
        check_choice("optimizer.name", self.name, OPTIMIZERS)
        if not self.lr > 0:
            raise ConfigError(f"optimizer.lr={self.lr} must be > 0")
        if not self.eps > 0:
            raise ConfigError(f"optimizer.eps={self.eps} must be > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"optimizer.weight_decay={self.weight_decay} must be >= 0")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"optimizer.momentum={self.momentum} must be in [0, 1]")


SchedulerKind = Literal["plateau", "cosine", "onecycle", "poly"]
SCHEDULER_KINDS: tuple[str, ...] = ("plateau", "cosine", "onecycle", "poly")
INTERVALS: tuple[str, ...] = ("epoch", "step")


@dataclass(frozen=True)
class SchedulerSpec:
    """The learning-rate schedule (formulas in ``bench.training.schedules``, written once for both frameworks).

    ``kind``:
        ``plateau`` (default): ReduceLROnPlateau on the validation loss (training loss without validation):
        ``factor``, ``patience``, ``min_lr``, ``threshold``; ``factor=1.0`` or ``patience<=0`` disables it.
        ``cosine``: cosine annealing from the optimizer's lr to ``min_lr`` over the run.
        ``poly``: ``lr * (1 - t / T) ** power`` (nnU-Net's, power 0.9).
        ``onecycle``: torch's OneCycleLR (cosine, two phases, no momentum cycling): from ``lr / div_factor``
        up to ``lr`` over the first ``pct_start`` of the run, then down to ``lr / div_factor / final_div_factor``.
    ``warmup_epochs``: a linear rise ``lr * (t + 1) / (W + 1)`` over the first epochs (not with onecycle, whose
    rise is ``pct_start``); the schedule then runs over the remaining epochs. ``interval``: the lr changes
    every ``epoch`` or every ``step`` (t and T counted in that unit; plateau itself always acts per epoch).
    """

    kind: SchedulerKind = "plateau"
    factor: float = 0.5
    patience: int = 5
    min_lr: float = 1e-6
    threshold: float = 1e-4
    warmup_epochs: int = 0
    interval: Literal["epoch", "step"] = "epoch"
    power: float = 0.9
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    @property
    def enabled(self) -> bool:
        """Whether the plateau rule can lower the lr (only for ``kind=plateau``)."""
        return self.kind == "plateau" and self.factor < 1.0 and self.patience > 0

    def __post_init__(self) -> None:
        check_choice("scheduler.kind", self.kind, SCHEDULER_KINDS)
        check_choice("scheduler.interval", self.interval, INTERVALS)
        if not 0 < self.factor <= 1:
            raise ConfigError(f"scheduler.factor={self.factor} must be in (0, 1]")
        if self.min_lr < 0:
            raise ConfigError(f"scheduler.min_lr={self.min_lr} must be >= 0")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ConfigError(f"scheduler.warmup_epochs={self.warmup_epochs!r} must be an integer >= 0")
        if self.kind == "onecycle" and self.warmup_epochs:
            raise ConfigError(f"scheduler.warmup_epochs={self.warmup_epochs} does not apply to kind=onecycle",
                              fix="set warmup_epochs=0: onecycle rises over its first pct_start of the run")
        if not self.power > 0:
            raise ConfigError(f"scheduler.power={self.power} must be > 0")
        if not 0 < self.pct_start < 1:
            raise ConfigError(f"scheduler.pct_start={self.pct_start} must be in (0, 1)")
        if not (self.div_factor >= 1 and self.final_div_factor >= 1):
            raise ConfigError(f"scheduler.div_factor={self.div_factor} and final_div_factor={self.final_div_factor} "
                              "must be >= 1")

    def record(self) -> dict[str, Any]:
        """The settings that apply to this ``kind`` (a run's params and hash hold only these)."""
        names = {
            "plateau": ("factor", "patience", "min_lr", "threshold"),
            "cosine": ("min_lr",),
            "poly": ("power",),
            "onecycle": ("pct_start", "div_factor", "final_div_factor"),
        }[self.kind]
        out: dict[str, Any] = {"kind": self.kind, **{name: getattr(self, name) for name in names}}
        if self.kind != "onecycle":
            out["warmup_epochs"] = self.warmup_epochs
        if self.kind != "plateau" or self.warmup_epochs:
            out["interval"] = self.interval
        return out


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """Stop when the monitored loss has not improved by ``min_delta`` for ``patience`` epochs.

    The best weights are restored at the end of training. ``patience<=0`` disables stopping (the best
    weights are still restored when there is a validation source).
    """

    patience: int = 10
    min_delta: float = 0.0


@dataclass(frozen=True)
class LossSpec:
    """Training loss.

    ``dice`` is the paper's Eq. 2 made multi-class, background included: with ``dice_reduction="sample"``
    per sample b and class c ``d_bc = (2 Σ p g + smooth) / (Σ p² + Σ g² + smooth)`` over voxels, loss
    ``1 - mean_{b,c} d_bc``; with ``"batch"`` the sums run over every voxel of the batch (Eq. 2's single
    sum over all N voxels, nnU-Net's "batch Dice"), loss ``1 - mean_c d_c``: a class absent from one patch
    no longer gives that patch a near-zero Dice term to chase.
    ``ce`` is the mean voxel-wise cross-entropy of the logits. ``dice_ce`` is
    ``dice_weight * dice + ce_weight * ce``.
    """

    name: LossName = "dice"
    smooth: float = 1e-5
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_reduction: DiceReduction = "sample"

    @classmethod
    def from_section(cls, cfg: Mapping[str, Any]) -> LossSpec:
        """The ``loss`` config section: ``name`` required, the rest defaulted; ConfigError naming an unknown key or
        a bad value."""
        check_keys("loss", cfg, [f.name for f in fields(cls)])
        values: dict[str, Any] = {"name": check_choice("loss.name", cfg.get("name"), LOSSES)}
        for key in ("smooth", "dice_weight", "ce_weight"):
            if key in cfg:
                values[key] = check_number(f"loss.{key}", cfg[key])
        if "dice_reduction" in cfg:
            values["dice_reduction"] = check_choice("loss.dice_reduction", cfg["dice_reduction"], DICE_REDUCTIONS)
        return cls(**values)

    def __post_init__(self) -> None:
        check_choice("loss.name", self.name, LOSSES)
        check_choice("loss.dice_reduction", self.dice_reduction, DICE_REDUCTIONS)
        if self.smooth < 0:
            raise ConfigError(f"loss.smooth={self.smooth} must be >= 0")


@dataclass(frozen=True)
class TrainSpec:
    """How to train, identical in meaning for every framework.

    Attributes:
        epochs: Maximum number of epochs.
        steps_per_epoch: Batches per epoch; ``None`` uses one full pass of the train source.
        optimizer, scheduler, loss, early_stopping: See their specs.
        seed: Seeds Python, numpy and the framework.
        device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``.
        num_threads: CPU threads for the framework; ``0`` uses all cores (``bench.config`` resolves a
            configured 0 to the CPUs the worker was given, ``bench.hardware.worker_cpus``).
        deterministic: Ask the framework for deterministic kernels where it has them (``profile.deterministic``;
            torch: ``use_deterministic_algorithms`` and no cuDNN autotuning; TF: op determinism, which stays on
            for the rest of the process once a fit has asked for it).
        prefetch_batches: Batches made ahead in a background thread while a step runs
            (``bench.training.prefetch``; 0: none). The batches and their order do not change, so it is not
            part of a run's identity.
        progress: Show a progress bar per epoch (it stays quiet when output is not a terminal).
        monitor: What picks the best epoch (whose weights are restored) and drives early stopping and the
            plateau lr: ``val_loss`` (the validation loss), or ``val_dice`` (1 - the mean validation Dice of
            the tissue classes, nnU-Net's choice: a class learned late, like CSF, keeps improving it while the
            loss is flat). Without a validation source the mean training loss is monitored either way.
        precision: ``fp32``; ``bf16`` (bfloat16 autocast / Keras ``mixed_bfloat16``: weights, loss, softmax and
            metrics stay float32); ``fp16`` (float16 with loss scaling, CUDA only); ``auto`` (resolved by
            ``bench.hardware``: ``bench.config`` resolves it before a run is recorded, an adapter given ``auto``
            resolves it the same way and its ``describe()`` says what ran). ConfigError at fit if the device
            cannot run it natively.
        keep_weights: Which weights a fit ends with: ``best`` (those of the best monitored epoch, restored)
            or ``last`` (the final epoch's, as nnU-Net keeps: for schedules that anneal to their end, and for
            training without validation).
    """

    epochs: int = 10
    steps_per_epoch: int | None = None
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0
    deterministic: bool = True
    progress: bool = True
    prefetch_batches: int = 2
    precision: Precision = "fp32"
    monitor: Monitor = "val_loss"
    keep_weights: KeepWeights = "best"

    def __post_init__(self) -> None:
        check_choice("train.monitor", self.monitor, MONITORS)
        check_choice("train.keep_weights", self.keep_weights, KEEP_WEIGHTS)
        if self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs} must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"train.steps_per_epoch={self.steps_per_epoch} must be >= 1 or null")
        check_choice("train.device", self.device, DEVICES)
        if self.num_threads < 0:
            raise ConfigError(f"train.num_threads={self.num_threads} must be >= 0")
        if self.prefetch_batches < 0:
            raise ConfigError(f"train.prefetch_batches={self.prefetch_batches} must be >= 0", fix="0 turns it off")
        check_precision_name(self.precision, "train.precision")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch produced (``val_*`` are ``None`` without a validation source)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_dice: dict[str, float] | None
    lr: float
    seconds: float
    patches_per_s: float
    patches_seen: int = 0
    """Training patches seen since the fit began, this epoch's included."""
    skipped_steps: int = 0
    """Train steps of this epoch whose update was skipped: a gradient was not finite though the loss was."""


Convergence = Literal["stopped_early", "plateaued", "still_improving", "no_training"]
"""How a fit ended: early stopping fired before the last epoch; the monitored loss stopped improving
(stopping fired at the last epoch, or no improvement in the last epochs with stopping off); the epochs ran
out while it still improved (more would likely help: not converged); or nothing was trained (an atlas)."""


@dataclass
class TrainHistory:
    """All epochs of one fit, which epoch's weights were kept, and how the fit ended.

    Attributes:
        unlearned: Tissue classes whose validation Dice was still 0 at the last epoch (a network that never
            predicts them): runs, logs and reports say so rather than showing a silent 0.000.
    """

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    fit_seconds: float = 0.0
    convergence: Convergence = "no_training"
    unlearned: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        """False only when the epochs ran out while the monitored loss was still improving."""
        return self.convergence != "still_improving"

    @property
    def skipped_steps(self) -> int:
        """Train steps of the whole fit whose update was skipped for a non-finite gradient."""
        return sum(record.skipped_steps for record in self.epochs)


class RunLogger(Protocol):
    """Receives progress from a fit (implemented by bench.tracking; a no-op logger is below)."""

    def log_epoch(self, record: EpochRecord) -> None: ...


class NullLogger:
    """A RunLogger that drops everything."""

    def log_epoch(self, record: EpochRecord) -> None:
        return None


@runtime_checkable
class Segmenter(Protocol):
    """A trainable patch-based segmenter (one architecture in one framework)."""

    name: str
    framework: str

    def fit(
        self, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger
    ) -> TrainHistory: ...

    def predict_patches(self, batch: FloatArray) -> FloatArray:
        """``float32[B, C, X, Y, Z]`` -> softmax ``float32[B, K, X, Y, Z]``."""
        ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...

    def describe(self) -> dict[str, Any]:
        """Parameter count, framework and library versions, constructor parameters."""
        ...
