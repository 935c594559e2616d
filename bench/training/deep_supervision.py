"""Deep supervision, framework-neutral: the loss weight and the label grid of every output head.

A network with ``k`` auxiliary heads (``UNet3DConfig.deep_supervision``) returns, in training, logits at
``k + 1`` resolutions: head ``i`` (0 = full resolution) at ``1 / 2**i`` of the patch along every axis. Its
training loss (nnU-Net's) is ``sum_i w_i * loss(logits_i, labels_i)`` with ``w_i = 2**-i / sum_j 2**-j`` and
``labels_i`` the labels at the voxel ``(s // 2, s // 2, s // 2)`` of every ``s³`` block (``s = 2**i``:
nearest-neighbour down-sampling, ``label[:, s//2::s, s//2::s, s//2::s]``). With ``k = 0`` this is the loss
itself. Both frameworks call these two functions, so they weigh and down-sample alike.

Example:
    >>> head_weights(2)
    (0.5714285714285714, 0.2857142857142857, 0.14285714285714285)
"""

from __future__ import annotations


def head_weights(aux_heads: int) -> tuple[float, ...]:
    """Loss weights of the full-resolution head and ``aux_heads`` auxiliary heads: ``2**-i``, summing to 1."""
    raw = [0.5**i for i in range(aux_heads + 1)]
    return tuple(w / sum(raw) for w in raw)


def label_grid(head: int) -> tuple[int, int]:
    """``(offset, stride)`` of the labels head ``head`` is trained on: ``label[:, offset::stride, ...]``."""
    stride = 2**head
    return stride // 2, stride
