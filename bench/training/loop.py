"""The training loop, written once for every framework (numpy and ``bench.contract`` only).

One epoch (numbered from 0, the number handed to ``train.batches``) runs at most ``spec.steps_per_epoch``
train steps; then, with a validation source, the validation loss (mean over its batches, eval mode) and
hard-argmax Dice per tissue class accumulated over all validation voxels. The monitored value
(``TrainSpec.monitor``) is the validation loss or 1 - the mean validation Dice of the tissue classes, or the
mean training loss without validation. It drives ReduceLROnPlateau (``Plateau``,
torch's rules), early stopping (``EarlyStopper``) and the best weights, which are restored at the end.
The other schedules (cosine, poly, onecycle, warm-up; ``bench.training.schedules``) set the lr before every epoch
or every step. ``EpochRecord.lr`` is the learning rate of the epoch's first step.

A framework supplies only its ``TrainSteps``: one train step, one eval step, the learning rate, and a
snapshot/restore of the weights. The torch and TF adapters therefore cannot drift in these rules.

Batches (training and validation) are made ``spec.prefetch_batches`` ahead in a background thread while the
steps run (``bench.training.prefetch``): the same batches in the same order as without it.

Example:
    >>> history = fit(steps, train_source, val_source, TrainSpec(epochs=5), NullLogger())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import numpy as np

from bench.contract import (
    Convergence,
    EarlyStoppingSpec,
    EpochRecord,
    PatchBatch,
    PatchSource,
    RunLogger,
    SchedulerSpec,
    TrainHistory,
    TrainSpec,
)
from bench.data.labels import IBSR_LABELS
from bench.errors import BenchError
from bench.training.prefetch import prefetched
from bench.training.schedules import LrSchedule

PLATEAU_EPS = 1e-8
"""As torch's ReduceLROnPlateau: a learning-rate change smaller than this is ignored."""
MAX_CONSECUTIVE_SKIPPED_STEPS = 10
"""A fit stops with an error when this many train steps in a row had a non-finite gradient (a diverged net,
not the occasional bad low-precision kernel result that a skipped update absorbs)."""
StepCallback = Callable[[int, float], None]
"""``callback(patches_done_this_epoch, running_mean_loss)``, called after every step."""


class TrainSteps(Protocol):
    """What a framework supplies to ``fit``: steps on channels-first numpy batches, lr and weights.

    Optional: ``stage(batch) -> PatchBatch``, run on every batch in the prefetch thread before its step (the
    same values, made ready for the device); ``skipped_steps`` (see ``train_step``).
    """

    def train_step(self, batch: PatchBatch) -> float:
        """Forward, loss, backward, optimizer update; the batch's loss (no update if it is not finite).

        A step whose loss is finite but some gradient is not applies no update and adds 1 to the steps'
        ``skipped_steps`` counter (optional: steps without the attribute never skip), as torch's and Keras'
        loss scalers skip an overflowed fp16 step.
        """
        ...

    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        """Eval-mode loss and the ``[true, predicted]`` hard-argmax confusion matrix ``int[K, K]``."""
        ...

    def get_lr(self) -> float: ...

    def set_lr(self, lr: float) -> None: ...

    def snapshot(self) -> Any:
        """A copy of every weight (trainable or not) that ``restore`` can put back."""
        ...

    def restore(self, state: Any) -> None: ...


def staged(steps: TrainSteps, batches: Iterable[PatchBatch]) -> Iterator[PatchBatch]:
    """``batches`` passed through the steps' optional ``stage(batch) -> PatchBatch`` (the same values, made ready
    for the device: torch on CUDA copies them into pinned memory), which then runs in the prefetch thread."""
    stage: Callable[[PatchBatch], PatchBatch] | None = getattr(steps, "stage", None)
    return iter(batches) if stage is None else map(stage, batches)


@dataclass
class Plateau:
    """ReduceLROnPlateau exactly as torch's (mode min, relative threshold, no cooldown).

    An epoch improves when ``value < best * (1 - threshold)``; after more than ``patience`` epochs
    without improvement the lr becomes ``max(lr * factor, min_lr)`` and the count restarts.
    """

    spec: SchedulerSpec
    best: float = math.inf
    bad_epochs: int = 0

    def step(self, value: float, lr: float) -> float:
        """The lr to use from the next epoch on, given this epoch's monitored ``value``."""
        if not self.spec.enabled:
            return lr
        if value < self.best * (1.0 - self.spec.threshold):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.spec.patience:
            self.bad_epochs = 0
            new_lr = max(lr * self.spec.factor, self.spec.min_lr)
            if lr - new_lr > PLATEAU_EPS:
                return new_lr
        return lr


@dataclass
class EarlyStopper:
    """Stop after ``patience`` epochs without an improvement larger than ``min_delta`` (never if <= 0)."""

    spec: EarlyStoppingSpec
    best: float = math.inf
    wait: int = 0

    def step(self, value: float) -> bool:
        """Record this epoch's monitored ``value``; True when training should stop."""
        if value < self.best - self.spec.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        return self.spec.patience > 0 and self.wait >= self.spec.patience


def dice_per_class(confusion: np.ndarray, names: Sequence[str] = IBSR_LABELS.names) -> dict[str, float]:
    """Dice of every non-background class from a ``[true, predicted]`` confusion matrix, keyed by class name
    (``names[k]`` for class index ``k``; ``class<k>`` beyond them).

    A class absent from both the prediction and the reference scores 1.0.
    """
    dice: dict[str, float] = {}
    for c in range(1, confusion.shape[0]):
        denominator = confusion[c, :].sum() + confusion[:, c].sum()
        value = 2.0 * confusion[c, c] / denominator if denominator else 1.0
        dice[names[c] if c < len(names) else f"class{c}"] = float(value)
    return dice


def class_names(source: PatchSource) -> tuple[str, ...]:
    """The class names of a patch source's labels (index order; a source that does not say: IBSR's)."""
    return tuple(getattr(source, "class_names", IBSR_LABELS.names))


def skipped_so_far(steps: TrainSteps) -> int:
    """The steps' count of updates skipped for a non-finite gradient (0 for steps that do not count)."""
    return int(getattr(steps, "skipped_steps", 0))


def train_epoch(
    steps: TrainSteps, batches: Iterable[PatchBatch], epoch: int, on_step: StepCallback | None = None,
    lr_of_step: Callable[[int], float] | None = None,
) -> tuple[float, int, int]:
    """One pass of train steps; (mean loss, patches seen, steps skipped for a non-finite gradient).
    ``lr_of_step(index)``, if given, is set before each step.

    Raises:
        BenchError: A batch with non-finite intensities (some CPU kernels turn NaN into 0, so it would
            otherwise train on silently), a non-finite loss, ``MAX_CONSECUTIVE_SKIPPED_STEPS`` steps in a row
            with a non-finite gradient (each naming epoch and step), or no batches.
    """
    total, count, patches = 0.0, 0, 0
    skipped_at_start, in_a_row = skipped_so_far(steps), 0
    for index, batch in enumerate(batches):
        if not np.isfinite(batch.image).all():
            raise BenchError(
                f"training batch at epoch {epoch}, step {index} holds non-finite intensities",
                fix="check the input volumes and the preprocessing",
            )
        if lr_of_step is not None:
            steps.set_lr(lr_of_step(index))
        skipped_before = skipped_so_far(steps)
        value = float(steps.train_step(batch))
        if not math.isfinite(value):
            raise BenchError(
                f"training loss became {value} at epoch {epoch}, step {index}",
                fix="lower optimizer.lr (or check the input intensities)",
            )
        in_a_row = in_a_row + 1 if skipped_so_far(steps) > skipped_before else 0
        if in_a_row >= MAX_CONSECUTIVE_SKIPPED_STEPS:
            raise BenchError(
                f"the gradients were not finite in {in_a_row} train steps in a row, up to epoch {epoch}, "
                f"step {index} (their updates were skipped; the loss stayed finite)",
                fix="lower optimizer.lr, or train in profile.precision=fp32",
            )
        total, count, patches = total + value, count + 1, patches + int(batch.image.shape[0])
        if on_step is not None:
            on_step(patches, total / count)
    if count == 0:
        raise BenchError(f"the training patch source yielded no batches in epoch {epoch}")
    return total / count, patches, skipped_so_far(steps) - skipped_at_start


def evaluate(steps: TrainSteps, batches: Iterable[PatchBatch], epoch: int,
             names: Sequence[str] = IBSR_LABELS.names) -> tuple[float, dict[str, float]]:
    """Mean eval loss over ``batches`` and hard Dice per class (named by ``names``) over all their voxels."""
    total, count = 0.0, 0
    confusion: np.ndarray | None = None
    for batch in batches:
        loss, counts = steps.eval_step(batch)
        total, count = total + float(loss), count + 1
        confusion = counts if confusion is None else confusion + counts
    if confusion is None:
        raise BenchError(f"the validation patch source yielded no batches in epoch {epoch}",
                         fix="check the validation split")
    return total / count, dice_per_class(confusion, names)


def monitored_value(monitor: str, train_loss: float, val_loss: float | None,
                    val_dice: dict[str, float] | None) -> float:
    """The value an epoch is judged by (lower is better): see ``TrainSpec.monitor``."""
    if val_loss is None:
        return train_loss
    if monitor == "val_dice" and val_dice:
        return 1.0 - float(np.mean(list(val_dice.values())))
    return val_loss


def fit(
    steps: TrainSteps, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger
) -> TrainHistory:
    """Train with ``steps`` as ``spec`` says and return the history (the best epoch's weights restored, or
    the last epoch's kept: ``spec.keep_weights``; ``history.best_epoch`` is the best monitored epoch either way).

    Raises:
        BenchError: Non-finite input or loss (naming epoch and step), or an empty patch source.
    """
    started = time.perf_counter()
    per_epoch = len(train) if spec.steps_per_epoch is None else min(spec.steps_per_epoch, len(train))
    history = TrainHistory()
    plateau, stopper = Plateau(spec.scheduler), EarlyStopper(spec.early_stopping)
    schedule = LrSchedule(spec.scheduler, steps.get_lr(), spec.epochs, per_epoch)
    best_value, best_state, seen = math.inf, None, 0
    with progress_bar(spec.progress, per_epoch * train.batch_size) as progress:
        for epoch in range(spec.epochs):
            scheduled = schedule.sets_lr(epoch)
            if scheduled:
                steps.set_lr(schedule.lr(epoch))
            lr = steps.get_lr()
            epoch_start = time.perf_counter()
            lr_of_step = (lambda i, e=epoch: schedule.lr(e, i)) if scheduled and schedule.per_step else None
            with prefetched(staged(steps, islice(train.batches(epoch), per_epoch)), spec.prefetch_batches) as batches:
                train_loss, patches, skipped = train_epoch(steps, batches, epoch, progress(epoch), lr_of_step)
            train_seconds = time.perf_counter() - epoch_start
            seen += patches
            val_loss, val_dice = None, None
            if val is not None:
                with prefetched(staged(steps, val.batches(epoch)), spec.prefetch_batches) as batches:
                    val_loss, val_dice = evaluate(steps, batches, epoch, class_names(val))
            monitored = monitored_value(spec.monitor, train_loss, val_loss, val_dice)
            record = EpochRecord(
                epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_dice=val_dice, lr=lr,
                seconds=time.perf_counter() - epoch_start, patches_per_s=patches / max(train_seconds, 1e-9),
                patches_seen=seen, skipped_steps=skipped,
            )
            history.epochs.append(record)
            log.log_epoch(record)
            if monitored < best_value:
                best_value, history.best_epoch = monitored, epoch
                if spec.keep_weights == "best":
                    best_state = steps.snapshot()
            if epoch >= spec.scheduler.warmup_epochs:  # plateau only (others are never enabled)
                new_lr = plateau.step(monitored, steps.get_lr())
                if new_lr != steps.get_lr():
                    steps.set_lr(new_lr)
            if stopper.step(monitored):
                history.stopped_early = epoch < spec.epochs - 1
                history.convergence = "stopped_early" if history.stopped_early else "plateaued"
                break
        else:
            history.convergence = convergence_at_the_end(history, spec)
    if best_state is not None:  # None when the last weights are kept, or if every monitored value was NaN
        steps.restore(best_state)
    history.unlearned = unlearned_classes(history)
    history.fit_seconds = time.perf_counter() - started
    return history


def convergence_at_the_end(history: TrainHistory, spec: TrainSpec) -> Convergence:
    """How a fit that ran all its epochs ended: ``plateaued`` when the best epoch lies more than a window
    before the last (the early-stopping patience, or with stopping off ``max(3, epochs // 5)``; with stopping
    on, reaching the last epoch means it improved within the patience), else ``still_improving``."""
    if spec.early_stopping.patience > 0 or history.best_epoch is None:
        return "still_improving"
    window = max(3, spec.epochs // 5)
    return "plateaued" if history.best_epoch < len(history.epochs) - window else "still_improving"


def unlearned_classes(history: TrainHistory) -> tuple[str, ...]:
    """Classes whose validation Dice is 0 at the last epoch (none without validation)."""
    last = history.epochs[-1].val_dice if history.epochs else None
    return tuple(name for name, dice in (last or {}).items() if dice == 0.0)


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
