"""Training losses from ``bench.contract.LossSpec`` (channels-last logits ``[B, X, Y, Z, K]``).

All three take raw logits and integer labels ``[B, X, Y, Z]`` and return a scalar float32 tensor; they
agree with the PyTorch adapter's losses to 1e-5 on the same inputs (both are tested against one numpy
oracle).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from bench.contract import LossSpec
from bench.training.deep_supervision import head_weights, label_grid

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
SPATIAL_AXES = (1, 2, 3)


def dice_loss(logits: tf.Tensor, labels: tf.Tensor, smooth: float = 1e-5, over_batch: bool = False) -> tf.Tensor:
    """The paper's Eq. 2, soft and multi-class, background included.

    ``d_bc = (2 Σ_v p g + smooth) / (Σ_v p² + Σ_v g² + smooth)`` with ``p = softmax(logits)`` and
    ``g = one_hot(labels)``; the loss is ``1 - mean_{b,c} d_bc``. ``over_batch``: the sums run over the
    batch's voxels too, ``d_c``, loss ``1 - mean_c d_c``.
    """
    probs = tf.nn.softmax(logits, axis=-1)
    onehot = tf.one_hot(labels, depth=tf.shape(logits)[-1], dtype=probs.dtype)
    summed = (0, *SPATIAL_AXES) if over_batch else SPATIAL_AXES
    intersection = tf.reduce_sum(probs * onehot, axis=summed)
    denominator = tf.reduce_sum(probs * probs, axis=summed) + tf.reduce_sum(onehot, axis=summed)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - tf.reduce_mean(dice)


def ce_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean voxel-wise cross-entropy ``-log softmax(logits)[label]`` (computed stably from logits)."""
    per_voxel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(per_voxel)


def make_loss(spec: LossSpec) -> LossFn:
    """The loss function ``(logits, labels) -> scalar`` described by ``spec``."""
    smooth = float(spec.smooth)
    over_batch = spec.dice_reduction == "batch"
    if spec.name == "dice":
        return lambda logits, labels: dice_loss(logits, labels, smooth, over_batch)
    if spec.name == "ce":
        return ce_loss
    dice_weight, ce_weight = float(spec.dice_weight), float(spec.ce_weight)
    return lambda logits, labels: (
        dice_weight * dice_loss(logits, labels, smooth, over_batch) + ce_weight * ce_loss(logits, labels)
    )


def deep_supervised(loss_fn: LossFn, heads: list[tf.Tensor], labels: tf.Tensor) -> tf.Tensor:
    """``sum_i w_i * loss_fn(heads[i], labels on head i's grid)`` (``bench.training.deep_supervision``); one head: the loss."""
    if len(heads) == 1:
        return loss_fn(heads[0], labels)
    terms = []
    for i, (weight, logits) in enumerate(zip(head_weights(len(heads) - 1), heads, strict=True)):
        offset, stride = label_grid(i)
        terms.append(weight * loss_fn(logits, labels[:, offset::stride, offset::stride, offset::stride]))
    return tf.add_n(terms)
