"""Training losses from ``bench.contract.LossSpec``, computed from logits ``[B, K, X, Y, Z]``.

Example:
    >>> loss_fn = make_loss(LossSpec(name="dice_ce"))
    >>> loss = loss_fn(torch.zeros(2, 4, 8, 8, 8), torch.zeros(2, 8, 8, 8, dtype=torch.int64))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.contract import LossSpec
from bench.training.deep_supervision import head_weights, label_grid

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits float[B, K, X, Y, Z], labels int64[B, X, Y, Z]) -> scalar``."""


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5, over_batch: bool = False) -> torch.Tensor:
    """Soft Dice loss of the paper's Eq. 2, background included.

    ``p = softmax(logits)``, ``g = one_hot(labels)``; per sample b and class c
    ``d_bc = (2 Σ_v p g + smooth) / (Σ_v p² + Σ_v g² + smooth)``; loss ``1 - mean_{b,c} d_bc``.
    ``over_batch``: the sums run over the batch's voxels too, ``d_c``, loss ``1 - mean_c d_c``.
    """
    p = torch.softmax(logits, dim=1)
    g = torch.zeros_like(p).scatter_(1, labels.unsqueeze(1), 1.0)
    summed = (0, *range(2, p.ndim)) if over_batch else tuple(range(2, p.ndim))
    overlap = (p * g).sum(summed)
    total = (p * p).sum(summed) + g.sum(summed)  # g² == g for a one-hot g
    return 1.0 - ((2.0 * overlap + smooth) / (total + smooth)).mean()


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean voxel-wise cross-entropy ``-log softmax(logits)[label]`` (log-softmax, numerically stable)."""
    return F.cross_entropy(logits, labels)


def make_loss(spec: LossSpec) -> LossFn:
    """The loss named by ``spec`` (``dice``, ``ce`` or ``dice_weight * dice + ce_weight * ce``)."""
    over_batch = spec.dice_reduction == "batch"
    if spec.name == "dice":
        return lambda logits, labels: dice_loss(logits, labels, spec.smooth, over_batch)
    if spec.name == "ce":
        return ce_loss
    return lambda logits, labels: (
        spec.dice_weight * dice_loss(logits, labels, spec.smooth, over_batch)
        + spec.ce_weight * ce_loss(logits, labels)
    )


def deep_supervised(loss_fn: LossFn, heads: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i * loss_fn(heads[i], labels on head i's grid)`` (``bench.training.deep_supervision``); one head: the loss."""
    if len(heads) == 1:
        return loss_fn(heads[0], labels)
    total = torch.zeros((), dtype=heads[0].dtype, device=heads[0].device)
    for i, (weight, logits) in enumerate(zip(head_weights(len(heads) - 1), heads, strict=True)):
        offset, stride = label_grid(i)
        total = total + weight * loss_fn(logits, labels[:, offset::stride, offset::stride, offset::stride])
    return total
