"""The TensorFlow training loop: same semantics as the PyTorch adapter's (see ``fit_model``).

A custom loop (``tf.GradientTape`` in one ``@tf.function`` step traced once for any patch size) rather
than ``model.fit``, so that batches, epochs, scheduler, early stopping and best-weight restoring follow
exactly the rules both adapters share.

Differences from torch that cannot be removed (all small):
- Adam: Keras adds ``epsilon`` to ``sqrt(v_t)`` after the bias correction has been folded into the step
  size (the Kingma & Ba "epsilon hat" form); torch adds it to ``sqrt(v_t / (1 - beta_2^t))``. In torch
  terms Keras's epsilon is ``eps / sqrt(1 - beta_2^t)``: 31.6 x eps at the first step with beta_2 = 0.999,
  tending to eps over a few thousand steps. Only weights whose gradients are below ~30 x eps (3e-7 for
  eps = 1e-8) move differently; with a negligible eps both give the same weights to 2e-5 (parity test).
- Adadelta: identical update to torch's (``rms(x) = sqrt(x + eps)`` on both accumulators).
- SGD with momentum: Keras keeps ``m = momentum * m - lr * g`` (the lr is folded into the buffer), torch
  keeps ``b = momentum * b + g`` and steps by ``lr * b``; identical while the lr is constant, slightly
  different for a few steps after ReduceLROnPlateau lowers it.
- Weight decay: implemented as torch does it (coupled L2: ``g + weight_decay * w`` for every trainable
  variable, before the optimizer), not with Keras 3's ``weight_decay`` argument, which is decoupled
  (AdamW-like). Keras optimizers are therefore built with ``weight_decay=None``.
- BatchNorm: Keras updates its moving variance with the biased batch variance, torch with the unbiased
  one (a factor ``n / (n - 1)`` with n voxels per channel in the batch: 1.000004 for 8 patches of 32³).
- Non-finite inputs: TF's oneDNN fused ReLU maps NaN to 0 (torch propagates it), so a batch with
  non-finite intensities is refused up front rather than trained on silently.
- Determinism: with ``spec.deterministic`` ``tf.config.experimental.enable_op_determinism()`` is switched
  on for the whole process (TF has no public switch to turn it off again, so ``deterministic=False``
  leaves the process setting as it is). On CPU the same seed then gives bit-identical fits for a fixed
  thread count; results may differ across thread counts, CPUs and TF builds (oneDNN kernels).
- Threads: TF fixes its thread pools when its runtime first starts (in practice when the model is built),
  so ``spec.num_threads`` only takes effect if nothing has run yet; otherwise a warning says so.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adapters.tf import to_channels_last
from adapters.tf.losses import LossFn, make_loss
from bench.contract import (
    EarlyStoppingSpec,
    EpochRecord,
    OptimizerSpec,
    PatchBatch,
    PatchSource,
    RunLogger,
    SchedulerSpec,
    TrainHistory,
    TrainSpec,
)
from bench.errors import BenchError, ConfigError
from bench.types import TISSUE_NAMES

PLATEAU_EPS = 1e-8
"""As torch's ReduceLROnPlateau: an lr change smaller than this is ignored."""


# ----------------------------------------------------------------------------------------------- runtime
def configure_runtime(spec: TrainSpec) -> None:
    """Seed Python, numpy, TF and Keras from ``spec.seed``; determinism and threads as ``spec`` asks."""
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    keras.utils.set_random_seed(spec.seed)
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    configure_threads(spec.num_threads)


def configure_threads(num_threads: int) -> None:
    """Use ``num_threads`` intra-op and inter-op threads (0: TF's defaults) if TF has not started yet.

    Both pools matter: with one intra-op thread TF still runs independent ops side by side on its
    inter-op pool (measured: a "1-thread" fit used 1.5 cores of 2). TF fixes its pools when it starts
    (building a model starts it), so call this first: ``adapters.configure_threads`` does.
    """
    threading = tf.config.threading
    if num_threads <= 0 or (threading.get_intra_op_parallelism_threads() == num_threads
                            and threading.get_inter_op_parallelism_threads() == num_threads):
        return
    try:
        threading.set_intra_op_parallelism_threads(num_threads)
        threading.set_inter_op_parallelism_threads(num_threads)
    except RuntimeError:
        warnings.warn(
            f"train.num_threads={num_threads} not applied: TensorFlow had already started (it fixes its "
            "thread pools at start-up); call adapters.configure_threads before building a TF model",
            RuntimeWarning,
            stacklevel=2,
        )


def select_device(spec: TrainSpec) -> str:
    """``/GPU:0`` when a GPU is visible and ``spec.device`` allows it, else ``/CPU:0`` (with a warning if
    ``device='cuda'`` was asked for, as the torch adapter does)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and spec.device != "cpu":
        return "/GPU:0"
    if spec.device == "cuda":
        warnings.warn("train.device=cuda but TensorFlow sees no GPU: training on CPU", stacklevel=2)
    return "/CPU:0"


def make_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    """The Keras optimizer of ``spec`` with every hyperparameter passed explicitly (weight decay apart)."""
    if spec.name == "adam":
        beta_1, beta_2 = spec.betas
        return keras.optimizers.Adam(
            learning_rate=spec.lr, beta_1=beta_1, beta_2=beta_2, epsilon=spec.eps, amsgrad=False
        )
    if spec.name == "adadelta":
        return keras.optimizers.Adadelta(learning_rate=spec.lr, rho=spec.rho, epsilon=spec.eps)
    if not 0.0 <= spec.momentum <= 1.0:
        raise ConfigError(f"optimizer.momentum={spec.momentum} must be in [0, 1]")
    return keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum, nesterov=False)


# ------------------------------------------------------------------------------ scheduler, early stopping
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


@dataclass
class BestWeights:
    """A copy of the weights (trainable and not) with the lowest monitored value so far."""

    value: float = math.inf
    epoch: int | None = None
    weights: list[np.ndarray] = field(default_factory=list)

    def offer(self, model: keras.Model, value: float, epoch: int) -> None:
        if value < self.value:
            self.value, self.epoch, self.weights = value, epoch, [w.copy() for w in model.get_weights()]

    def restore(self, model: keras.Model) -> None:
        if self.weights:
            model.set_weights(self.weights)


# ---------------------------------------------------------------------------------------------- steps
def _signature(in_channels: int) -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec([None, None, None, None, in_channels], tf.float32, name="image"),
        tf.TensorSpec([None, None, None, None], tf.int64, name="label"),
    ]


def make_train_step(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, loss_fn: LossFn, weight_decay: float
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """One compiled step: forward, loss, gradients (+ coupled L2), optimizer update; returns the loss."""
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(input_signature=_signature(int(model.input_shape[-1])))
    def train_step(image: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(model(image, training=True), label)
        grads = tape.gradient(loss, variables)
        if weight_decay > 0:
            grads = [g + weight_decay * v.value for g, v in zip(grads, variables, strict=True)]
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return train_step


def make_eval_step(
    model: keras.Model, loss_fn: LossFn
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]]:
    """One compiled evaluation: loss and, per class, hard-argmax intersection / predicted / true counts."""
    num_classes = int(model.output_shape[-1])

    @tf.function(input_signature=_signature(int(model.input_shape[-1])))
    def eval_step(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        logits = model(image, training=False)
        classes = tf.range(num_classes, dtype=tf.int64)
        pred = tf.equal(tf.argmax(logits, axis=-1)[..., None], classes)
        true = tf.equal(label[..., None], classes)
        axes = (0, 1, 2, 3)
        inter = tf.math.count_nonzero(pred & true, axis=axes)
        return (loss_fn(logits, label), inter, tf.math.count_nonzero(pred, axis=axes),
                tf.math.count_nonzero(true, axis=axes))

    return eval_step


def to_tensors(batch: PatchBatch) -> tuple[tf.Tensor, tf.Tensor]:
    """A channels-first numpy batch as channels-last float32 image and int64 label tensors."""
    image = tf.convert_to_tensor(to_channels_last(np.asarray(batch.image, dtype=np.float32)))
    label = tf.convert_to_tensor(np.asarray(batch.label, dtype=np.int64))
    return image, label


# ---------------------------------------------------------------------------------------------- loop
def _class_name(index: int) -> str:
    return TISSUE_NAMES.get(index, f"class{index}")


def evaluate(eval_step: Callable[..., Any], batches: Iterable[PatchBatch]) -> tuple[float, dict[str, float]]:
    """Mean loss over ``batches`` and hard Dice per foreground class accumulated over all their voxels.

    A class absent from both prediction and truth in every batch scores 1.0.
    """
    losses: list[float] = []
    inter = pred = true = None
    for batch in batches:
        loss, i, p, t = eval_step(*to_tensors(batch))
        losses.append(float(loss))
        inter = i.numpy() if inter is None else inter + i.numpy()
        pred = p.numpy() if pred is None else pred + p.numpy()
        true = t.numpy() if true is None else true + t.numpy()
    if inter is None or pred is None or true is None:
        raise BenchError("the validation source yielded no batches", fix="check the validation split")
    dice = {
        _class_name(c): (2.0 * float(inter[c]) / float(pred[c] + true[c]) if pred[c] + true[c] else 1.0)
        for c in range(1, len(inter))
    }
    return float(np.mean(losses)), dice


def _progress(spec: TrainSpec) -> Any:
    """A rich progress display on stderr, or None when disabled or stderr is not a terminal."""
    if not spec.progress or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=Console(stderr=True),
    )


def train_epoch(
    step: Callable[..., tf.Tensor], batches: Iterable[PatchBatch], epoch: int,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[float, int]:
    """Run one train ``step`` per batch; (mean loss, patches seen).

    ``on_step(patches_so_far, running_mean_loss)`` is called after every step (the progress bar).

    Raises:
        BenchError: A batch with non-finite intensities (TF's oneDNN ReLU turns NaN into 0, so it would
            otherwise train on silently), a non-finite loss (both naming epoch and step), or no batches.
    """
    total, steps, patches = 0.0, 0, 0
    for index, batch in enumerate(batches):
        if not np.isfinite(batch.image).all():
            raise BenchError(
                f"training batch at epoch {epoch}, step {index} holds non-finite intensities",
                fix="check the input volumes and the preprocessing",
            )
        value = float(step(*to_tensors(batch)))
        if not math.isfinite(value):
            raise BenchError(
                f"training loss became {value} at epoch {epoch}, step {index}",
                fix="lower optimizer.lr (or check the input intensities)",
            )
        total, steps, patches = total + value, steps + 1, patches + int(batch.image.shape[0])
        if on_step is not None:
            on_step(patches, total / steps)
    if steps == 0:
        raise BenchError(f"the training patch source yielded no batches in epoch {epoch}")
    return total / steps, patches


def _progress_callback(progress: Any, epoch: int, patches_per_epoch: int) -> Callable[[int, float], None] | None:
    """A new rich task for this epoch and the callback that advances it (None without a display)."""
    if progress is None:
        return None
    task = progress.add_task(f"epoch {epoch}", total=patches_per_epoch, info="")
    start = time.perf_counter()

    def on_step(patches: int, loss: float) -> None:
        rate = patches / max(time.perf_counter() - start, 1e-9)
        progress.update(task, completed=patches, info=f"loss {loss:.4f}  {rate:.1f} patches/s")

    return on_step


def fit_model(
    model: keras.Model, train: PatchSource, val: PatchSource | None, spec: TrainSpec, log: RunLogger
) -> TrainHistory:
    """Train ``model`` in place as ``spec`` says and return the history.

    Each epoch (numbered from 0; ``train.batches(epoch)``) runs at most ``spec.steps_per_epoch`` train
    steps, then evaluates ``val`` (mean loss over its batches, hard Dice per class). The monitored value
    (val loss, or mean train loss without ``val``) drives ReduceLROnPlateau, early stopping and the best
    weights, which are restored at the end. ``EpochRecord.lr`` is the lr the epoch was trained with.

    Raises:
        BenchError: The loss became non-finite (naming epoch and step), or a source was empty.
        ConfigError: A bad optimizer setting (SGD momentum outside [0, 1]).
    """
    configure_runtime(spec)
    steps = len(train) if spec.steps_per_epoch is None else min(spec.steps_per_epoch, len(train))
    history = TrainHistory()
    fit_start = time.perf_counter()
    with tf.device(select_device(spec)):
        optimizer = make_optimizer(spec.optimizer)
        loss_fn = make_loss(spec.loss)
        train_step = make_train_step(model, optimizer, loss_fn, float(spec.optimizer.weight_decay))
        eval_step = make_eval_step(model, loss_fn)
        plateau, stopper, best = Plateau(spec.scheduler), EarlyStopper(spec.early_stopping), BestWeights()
        lr = float(spec.optimizer.lr)
        progress = _progress(spec)
        if progress is not None:
            progress.start()
        try:
            for epoch in range(spec.epochs):
                epoch_start = time.perf_counter()
                on_step = _progress_callback(progress, epoch, steps * train.batch_size)
                batches = itertools.islice(train.batches(epoch), steps)
                train_loss, patches = train_epoch(train_step, batches, epoch, on_step)
                train_seconds = time.perf_counter() - epoch_start
                val_loss, val_dice = evaluate(eval_step, val.batches(epoch)) if val is not None else (None, None)
                monitored = val_loss if val_loss is not None else train_loss
                record = EpochRecord(
                    epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_dice=val_dice, lr=lr,
                    seconds=time.perf_counter() - epoch_start,
                    patches_per_s=patches / max(train_seconds, 1e-9),
                )
                history.epochs.append(record)
                log.log_epoch(record)
                best.offer(model, monitored, epoch)
                new_lr = plateau.step(monitored, lr)
                if new_lr != lr:
                    optimizer.learning_rate = new_lr
                    lr = new_lr
                if stopper.step(monitored):
                    history.stopped_early = epoch < spec.epochs - 1
                    break
        finally:
            if progress is not None:
                progress.stop()
        best.restore(model)
    history.best_epoch = best.epoch
    history.fit_seconds = time.perf_counter() - fit_start
    return history
