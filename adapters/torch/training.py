"""The PyTorch training loop: same semantics as adapters/tf/training.py, driven by ``bench.contract.TrainSpec``.

One epoch = at most ``spec.steps_per_epoch`` batches of ``train.batches(epoch)`` (epochs are numbered from
0, the number handed to ``batches``), each a forward, loss, backward and optimizer step; then, with a
validation source, the validation loss (mean over its batches, eval mode) and hard-argmax Dice per tissue
class accumulated over all validation voxels. The monitored value is the validation loss, or the mean
training loss without validation. It drives ReduceLROnPlateau (``torch.optim.lr_scheduler``, relative
threshold) and early stopping (stop after ``patience`` epochs without an improvement larger than
``min_delta``). The weights with the lowest monitored value are restored at the end.

Example:
    >>> history = train_network(net, train_source, val_source, TrainSpec(epochs=5), NullLogger())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np
import torch
from torch import nn

from adapters.torch.losses import LossFn, make_loss
from bench.contract import (
    EpochRecord,
    OptimizerSpec,
    PatchBatch,
    PatchSource,
    RunLogger,
    SchedulerSpec,
    TrainHistory,
    TrainSpec,
)
from bench.errors import BenchError
from bench.types import TISSUE_NAMES

StepCallback = Callable[[int, float], None]
"""``callback(patches_done_this_epoch, running_mean_loss)``, called after every step."""


MEMORY_FORMAT = torch.channels_last_3d
"""Layout of 5-D tensors (weights and activations): channels-last (NDHWC). oneDNN's 3D convolutions run
1.3-1.8x faster in it than in NCDHW on this CPU (1 thread, 32^3 patches, quick-profile U-Net, V-Net and
NeuroNet, training and inference; ``benchmarks/bench_training.py`` times it). Results change only by float
rounding; the numpy interface stays ``[B, C, X, Y, Z]``."""


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """Move ``net`` to ``device`` in ``MEMORY_FORMAT`` (in place; returned for chaining)."""
    return net.to(device=device, memory_format=MEMORY_FORMAT)  # type: ignore[call-overload, no-any-return]


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[B, C, X, Y, Z]`` numpy -> float32 tensor on ``device`` in ``MEMORY_FORMAT``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device, non_blocking=True)
    return tensor.contiguous(memory_format=MEMORY_FORMAT)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_runtime(spec: TrainSpec) -> torch.device:
    """Apply seeds, determinism and thread count from ``spec``; return the device to train on.

    Determinism (``torch.use_deterministic_algorithms(..., warn_only=True)``) and the thread count are
    process-wide settings in torch. The device is CUDA when present and ``spec.device != "cpu"``, else CPU.
    """
    seed_everything(spec.seed)
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not spec.deterministic
    configure_threads(spec.num_threads)
    if spec.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if spec.device == "cuda":
        warnings.warn("train.device=cuda but no CUDA device is available: training on CPU", stacklevel=2)
    return torch.device("cpu")


def configure_threads(num_threads: int) -> None:
    """Use ``num_threads`` CPU threads for torch ops (0: every core this process may use)."""
    torch.set_num_threads(num_threads or available_cores())


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_optimizer(params: Iterator[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimizer named by ``spec`` with every hyperparameter passed explicitly.

    Adam's ``weight_decay`` is torch's L2 penalty added to the gradient (Keras' is decoupled, AdamW-style).
    Keras Adam adds epsilon to ``sqrt(v)`` before bias correction ("epsilon hat"); torch adds it after, so
    the two agree exactly only once ``beta2**t`` is negligible. SGD momentum multiplies the learning rate
    after accumulating (torch) rather than before (Keras): identical while the learning rate is constant.
    """
    if spec.name == "adam":
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay, amsgrad=False
        )
    if spec.name == "adadelta":
        return torch.optim.Adadelta(
            params, lr=spec.lr, rho=spec.rho, eps=spec.eps, weight_decay=spec.weight_decay
        )
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, dampening=0.0, weight_decay=spec.weight_decay,
        nesterov=False,
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, spec: SchedulerSpec
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """ReduceLROnPlateau (mode min, relative threshold, no cooldown), or ``None`` when disabled.

    The learning rate is multiplied by ``factor`` (not below ``min_lr``) when the monitored value has not
    improved by more than ``threshold`` (relative) for more than ``patience`` epochs.
    """
    if not spec.enabled:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=spec.factor, patience=spec.patience, threshold=spec.threshold,
        threshold_mode="rel", cooldown=0, min_lr=spec.min_lr,
    )


def to_tensors(batch: PatchBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A numpy batch as (float32 image in ``MEMORY_FORMAT``, int64 label) tensors on ``device``.

    The label needs no copy when C-contiguous int64 (the usual case); the image is re-laid out once.
    """
    label = torch.from_numpy(np.ascontiguousarray(batch.label, dtype=np.int64))
    return image_tensor(batch.image, device), label.to(device, non_blocking=True)


def train_epoch(
    net: nn.Module,
    batches: Iterator[PatchBatch],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    device: torch.device,
    epoch: int,
    on_step: StepCallback | None = None,
) -> tuple[float, int]:
    """One pass of training steps; returns (mean loss, patches seen).

    Raises:
        BenchError: A non-finite loss (names the epoch and step), or no batches at all.
    """
    net.train()
    total, steps, patches = 0.0, 0, 0
    for step, batch in enumerate(batches):
        image, label = to_tensors(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(image), label)
        value = loss.item()
        if not math.isfinite(value):
            raise BenchError(
                f"training loss became {value} at epoch {epoch}, step {step}",
                fix="lower optimizer.lr (or check the input intensities)",
            )
        loss.backward()
        optimizer.step()
        total, steps, patches = total + value, steps + 1, patches + image.shape[0]
        if on_step is not None:
            on_step(patches, total / steps)
    if steps == 0:
        raise BenchError(f"the training patch source yielded no batches in epoch {epoch}")
    return total / steps, patches


@torch.inference_mode()
def evaluate(
    net: nn.Module, source: PatchSource, loss_fn: LossFn, device: torch.device, epoch: int
) -> tuple[float, dict[str, float]]:
    """Validation loss (mean over batches, eval mode) and hard-argmax Dice per tissue class.

    Dice is accumulated over all validation voxels; a class absent from both the prediction and the
    reference scores 1.0.
    """
    net.eval()
    total, steps = 0.0, 0
    confusion: torch.Tensor | None = None
    for batch in source.batches(epoch):
        image, label = to_tensors(batch, device)
        logits = net(image)
        total, steps = total + loss_fn(logits, label).item(), steps + 1
        classes = logits.shape[1]
        pairs = (label * classes + logits.argmax(dim=1)).flatten()
        counts = torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)
        confusion = counts if confusion is None else confusion + counts
    if confusion is None:
        raise BenchError(f"the validation patch source yielded no batches in epoch {epoch}")
    return total / steps, dice_per_class(confusion.cpu().numpy())


def dice_per_class(confusion: np.ndarray) -> dict[str, float]:
    """Dice of every non-background class from a ``[true, predicted]`` confusion matrix."""
    dice: dict[str, float] = {}
    for c in range(1, confusion.shape[0]):
        denominator = confusion[c, :].sum() + confusion[:, c].sum()
        value = 2.0 * confusion[c, c] / denominator if denominator else 1.0
        dice[TISSUE_NAMES.get(c, f"class{c}")] = float(value)
    return dice


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the network's parameters and buffers."""
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


def train_network(
    net: nn.Module,
    train_source: PatchSource,
    val_source: PatchSource | None,
    spec: TrainSpec,
    log: RunLogger,
) -> TrainHistory:
    """Fit ``net`` in place (on the device chosen by ``configure_runtime``) and return its history.

    Raises:
        BenchError: Non-finite training loss (names epoch and step), or an empty patch source.
    """
    started = time.perf_counter()
    device = configure_runtime(spec)
    place(net, device)
    loss_fn = make_loss(spec.loss)
    optimizer = make_optimizer(net.parameters(), spec.optimizer)
    scheduler = make_scheduler(optimizer, spec.scheduler)
    steps = len(train_source) if spec.steps_per_epoch is None else min(spec.steps_per_epoch, len(train_source))
    history = TrainHistory()
    best_value, best_state = math.inf, None
    stop_reference, epochs_without_improvement = math.inf, 0

    with progress_bar(spec.progress, steps * train_source.batch_size) as progress:
        for epoch in range(spec.epochs):
            lr = float(optimizer.param_groups[0]["lr"])
            epoch_start = time.perf_counter()
            on_step = progress(epoch)
            batches = islice(train_source.batches(epoch), steps)
            train_loss, patches = train_epoch(net, batches, optimizer, loss_fn, device, epoch, on_step)
            train_seconds = time.perf_counter() - epoch_start
            val_loss, val_dice = (None, None)
            if val_source is not None:
                val_loss, val_dice = evaluate(net, val_source, loss_fn, device, epoch)
            monitored = train_loss if val_loss is None else val_loss
            record = EpochRecord(
                epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_dice=val_dice, lr=lr,
                seconds=time.perf_counter() - epoch_start, patches_per_s=patches / max(train_seconds, 1e-9),
            )
            history.epochs.append(record)
            log.log_epoch(record)
            if monitored < best_value:
                best_value, best_state, history.best_epoch = monitored, snapshot(net), epoch
            if scheduler is not None:
                scheduler.step(monitored)
            if monitored < stop_reference - spec.early_stopping.min_delta:
                stop_reference, epochs_without_improvement = monitored, 0
            else:
                epochs_without_improvement += 1
            patience = spec.early_stopping.patience
            if patience > 0 and epochs_without_improvement >= patience:
                history.stopped_early = epoch < spec.epochs - 1
                break

    if best_state is not None:  # None only if every monitored value was NaN
        net.load_state_dict(best_state)
    history.fit_seconds = time.perf_counter() - started
    return history


@contextlib.contextmanager
def progress_bar(enabled: bool, patches_per_epoch: int) -> Iterator[Callable[[int], StepCallback | None]]:
    """Yield ``start(epoch) -> on_step | None``: one rich progress line per epoch with loss and patches/s.

    Quiet (``start`` returns ``None``) when ``enabled`` is False or stderr is not a terminal.
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda epoch: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.1f} patches/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:

        def start(epoch: int) -> StepCallback:
            task = bar.add_task("train", total=patches_per_epoch, epoch=epoch, loss=math.nan, rate=0.0)
            begun = time.perf_counter()

            def on_step(patches: int, loss: float) -> None:
                rate = patches / max(time.perf_counter() - begun, 1e-9)
                bar.update(task, completed=patches, loss=loss, rate=rate)

            return on_step

        yield start
