"""TensorFlow's part of training: runtime set-up, optimizer and the ``TrainSteps`` that ``bench.training.loop`` drives.

The steps are ``tf.GradientTape`` updates in one ``@tf.function`` traced once for any patch size (not
``model.fit``), so that batches, epochs, scheduler, early stopping and best weights follow the one
framework-neutral loop in ``bench.training.loop``.

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
- Non-finite inputs: TF's oneDNN fused ReLU maps NaN to 0 (torch propagates it), so ``bench.training.loop``
  refuses a batch with non-finite intensities up front, for both frameworks.
- Determinism: with ``spec.deterministic`` ``tf.config.experimental.enable_op_determinism()`` is switched
  on for the whole process (TF has no public switch to turn it off again, so ``deterministic=False``
  after a deterministic fit in the same process warns and runs deterministic kernels: measure the two in
  separate processes). Prefetch (``bench.training.prefetch``) makes the numpy batches in a background
  thread; TF copies them to the GPU inside the step (outside ``tf.data`` it has no public asynchronous
  host-to-device copy), so on TF only the sampling overlaps the step. On CPU the same seed then gives bit-identical fits for a fixed
  thread count; results may differ across thread counts, CPUs and TF builds (oneDNN kernels).
- Threads: TF fixes its thread pools when its runtime first starts (in practice when the model is built),
  so ``spec.num_threads`` only takes effect if nothing has run yet; otherwise a warning says so.

Precision: the model is built under a Keras dtype policy (``POLICIES``: ``bf16`` -> ``mixed_bfloat16``,
``fp16`` -> ``mixed_float16``): layers compute in the low precision, variables stay float32. The logits are
cast to float32 before the loss, the softmax and the confusion counts. ``fp16`` (GPU) wraps the optimizer in
Keras's ``LossScaleOptimizer``. ``mixed_bfloat16`` is used on CPUs because it was measured faster there
(``make bench``, README Performance; this project's 2-core AVX-512 BF16/AMX CPU, 32³, batch 8, 1 thread):
U-Net base 16 26.5 -> 46.4 patches/s (1.75×), quick-profile U-Net 67 -> 94, V-Net 20 -> 35, NeuroNet 14 -> 18.
On a CPU where it were slower, ``bench.hardware.CPU_BF16_FASTER["tf"] = False`` keeps ``auto`` at fp32.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adapters.tf import to_channels_last
from adapters.tf.losses import LossFn, deep_supervised, make_loss
from bench import hardware
from bench.contract import OptimizerSpec, PatchBatch, TrainSpec
from bench.errors import ConfigError

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
"""The Keras dtype policy a model is built under, per precision."""
_OP_DETERMINISM = False
"""Whether a fit in this process has switched TF's op determinism on (it stays on for the process)."""


# ----------------------------------------------------------------------------------------------- runtime
@contextlib.contextmanager
def policy_scope(precision: str) -> Iterator[None]:
    """Layers built inside take the Keras dtype policy of ``precision``; the global policy is restored after."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def native_precisions(device: str) -> tuple[str, ...]:
    """What ``device`` (``/GPU:0`` or ``/CPU:0``) runs natively: a GPU by its compute capability, the CPU by
    its flags (``bench.hardware``)."""
    gpus = tf.config.list_physical_devices("GPU")
    if device.startswith("/GPU") and gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return hardware.cuda_native_precisions((int(capability[0]), int(capability[1])))
    return hardware.cpu_native_precisions()


def configure_runtime(spec: TrainSpec) -> None:
    """Seed Python, numpy, TF and Keras from ``spec.seed``; determinism and threads as ``spec`` asks."""
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    keras.utils.set_random_seed(spec.seed)
    global _OP_DETERMINISM
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
        _OP_DETERMINISM = True
    elif _OP_DETERMINISM:
        warnings.warn("profile.deterministic=false, but an earlier fit in this process switched TensorFlow's op "
                      "determinism on and TF cannot switch it off: this fit runs deterministic kernels (run it in "
                      "a process of its own to measure the difference)", RuntimeWarning, stacklevel=2)
    configure_threads(spec.num_threads)


def configure_threads(num_threads: int) -> None:
    """Use ``num_threads`` intra-op and inter-op threads (0: TF's defaults) if TF has not started yet.

    Both pools matter: with one intra-op thread TF still runs independent ops side by side on its
    inter-op pool (measured: a "1-thread" fit used 1.5 cores of 2). TF fixes its pools when it starts
    (building a model starts it), so call this first: ``frameworks.configure_threads`` does.
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
            "thread pools at start-up); call frameworks.configure_threads before building a TF model",
            RuntimeWarning,
            stacklevel=2,
        )


def select_device(spec: TrainSpec) -> str:
    """``/GPU:0`` when a GPU is visible and ``spec.device`` allows it, else ``/CPU:0``; ConfigError for
    ``device='cuda'`` where TensorFlow sees no GPU (as the torch adapter does)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and spec.device != "cpu":
        return "/GPU:0"
    if spec.device == "cuda":
        raise ConfigError(f"train.device=cuda but TensorFlow {tf.__version__} sees no GPU",
                          fix="install tensorflow[and-cuda] (make install DEVICE=cuda), or use profile.device=auto "
                          "or cpu")
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
    return keras.optimizers.SGD(learning_rate=spec.lr, momentum=spec.momentum, nesterov=False)


# ---------------------------------------------------------------------------------------------- steps
def _signature(in_channels: int) -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec([None, None, None, None, in_channels], tf.float32, name="image"),
        tf.TensorSpec([None, None, None, None], tf.int64, name="label"),
    ]


def heads(outputs: Any) -> list[tf.Tensor]:
    """A model's outputs as a list of logits, full resolution first (several only with deep supervision)."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def output_classes(model: keras.Model) -> int:
    """The class count of the full-resolution output (the first of several with deep supervision)."""
    shape = model.output_shape
    return int((shape[0] if isinstance(shape, list) else shape)[-1])


def make_train_step(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, loss_fn: LossFn, weight_decay: float
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """One compiled step: forward, loss (float32 logits), gradients (+ coupled L2), optimizer update; returns
    the loss and whether every gradient was finite (the update is skipped when one is not).

    A non-finite loss updates nothing (``bench.training.loop`` then stops with an error naming epoch and step).
    With a ``LossScaleOptimizer`` (fp16) the gradients are of the scaled loss; the optimizer unscales them
    (the L2 term is added scaled alike) and skips a step whose gradients overflowed.
    """
    variables = model.trainable_variables
    optimizer.build(variables)
    scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)

    @tf.function(input_signature=_signature(int(model.input_shape[-1])))
    def train_step(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = deep_supervised(loss_fn, [tf.cast(h, tf.float32) for h in heads(model(image, training=True))],
                                   label)
            target = optimizer.scale_loss(loss) if scaled else loss
        grads = tape.gradient(target, variables)
        if weight_decay > 0:
            decay = weight_decay * optimizer.dynamic_scale if scaled else weight_decay
            grads = [g + decay * v.value for g, v in zip(grads, variables, strict=True)]
        # fp16's LossScaleOptimizer skips an overflowed step itself; otherwise a non-finite gradient is skipped
        # here (as torch's step), and a non-finite loss is never applied (the loop then stops).
        grads_finite = tf.constant(True) if scaled else tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
        if tf.math.logical_and(tf.math.is_finite(loss), grads_finite):
            optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss, grads_finite

    return train_step


def make_eval_step(model: keras.Model, loss_fn: LossFn) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """One compiled evaluation: the loss and the ``[true, predicted]`` hard-argmax confusion matrix."""
    num_classes = output_classes(model)

    @tf.function(input_signature=_signature(int(model.input_shape[-1])))
    def eval_step(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = tf.cast(heads(model(image, training=False))[0], tf.float32)
        pairs = tf.reshape(label * num_classes + tf.argmax(logits, axis=-1), [-1])
        counts = tf.math.bincount(pairs, minlength=num_classes * num_classes, dtype=tf.int64)
        return loss_fn(logits, label), tf.reshape(counts, [num_classes, num_classes])

    return eval_step


def to_tensors(batch: PatchBatch) -> tuple[tf.Tensor, tf.Tensor]:
    """A channels-first numpy batch as channels-last float32 image and int64 label tensors."""
    image = tf.convert_to_tensor(to_channels_last(np.asarray(batch.image, dtype=np.float32)))
    label = tf.convert_to_tensor(np.asarray(batch.label, dtype=np.int64))
    return image, label


class TfSteps:
    """``bench.training.loop.TrainSteps`` for a Keras model, every op on ``select_device(spec)``.

    ``precision`` is the one the model was built in (its policy); ``fp16`` adds loss scaling.
    """

    def __init__(self, model: keras.Model, spec: TrainSpec, precision: str = "fp32") -> None:
        self.model, self.device = model, select_device(spec)
        with tf.device(self.device):
            self.optimizer = make_optimizer(spec.optimizer)
            if precision == "fp16":
                self.optimizer = keras.mixed_precision.LossScaleOptimizer(self.optimizer)
            loss_fn = make_loss(spec.loss)
            self._train = make_train_step(model, self.optimizer, loss_fn, float(spec.optimizer.weight_decay))
            self._eval = make_eval_step(model, loss_fn)
        self._lr = float(spec.optimizer.lr)
        self.skipped_steps = 0
        """Updates skipped because a gradient was not finite (the loss was); fp16's scaler skips its own."""

    def train_step(self, batch: PatchBatch) -> float:
        with tf.device(self.device):
            loss, grads_finite = self._train(*to_tensors(batch))
        value = float(loss)
        if math.isfinite(value) and not bool(grads_finite):
            self.skipped_steps += 1
        return value

    def eval_step(self, batch: PatchBatch) -> tuple[float, np.ndarray]:
        with tf.device(self.device):
            loss, confusion = self._eval(*to_tensors(batch))
        return float(loss), confusion.numpy()

    def get_lr(self) -> float:
        return self._lr

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate = lr
        self._lr = lr

    def snapshot(self) -> list[np.ndarray]:
        """A copy of every weight, trainable or not (BatchNorm moving statistics included)."""
        return [w.copy() for w in self.model.get_weights()]

    def restore(self, state: list[np.ndarray]) -> None:
        self.model.set_weights(state)
