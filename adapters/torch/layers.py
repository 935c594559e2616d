"""Layers the PyTorch networks share.

Every network maps ``float32[B, C, X, Y, Z]`` to logits ``[B, K, X, Y, Z]``, has ``bias=True`` on every
convolution and "same" padding everywhere. Strided convolutions pad like TensorFlow's ``padding="same"``
(the extra voxel, if any, goes after), so the torch and TF networks compute the same function.
Weights use PyTorch's default initialisation (Kaiming-uniform with ``a=sqrt(5)`` for convolutions, biases
uniform in ``±1/sqrt(fan_in)``; norms start at scale 1, shift 0; PReLU slopes at 0.25).

The networks live in ``adapters.torch.nets``; their arguments are checked once, in ``adapters.configs``.
"""

from __future__ import annotations

from torch import nn


def conv3d(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
    """Conv3d with bias and TensorFlow-style "same" padding.

    With stride 1 this is ``padding="same"``. With stride ``s`` on sizes divisible by ``s`` TF pads
    ``max(kernel - s, 0)`` voxels per axis, the odd one after; an asymmetric pad is a ConstantPad3d.
    """
    if stride == 1:
        return nn.Conv3d(c_in, c_out, kernel, padding="same", bias=True)
    total = max(kernel - stride, 0)
    before, after = total // 2, total - total // 2
    if before == after:
        return nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=before, bias=True)
    pad = nn.ConstantPad3d((before, after) * 3, 0.0)
    return nn.Sequential(pad, nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=0, bias=True))


def up_conv3d(c_in: int, c_out: int, factor: int) -> nn.ConvTranspose3d:
    """Transposed conv with kernel = stride = ``factor`` (multiplies every spatial size by ``factor``)."""
    return nn.ConvTranspose3d(c_in, c_out, factor, stride=factor, bias=True)


def make_norm(norm: str, channels: int) -> nn.Module:
    """``none`` -> Identity; ``batch`` -> BatchNorm3d; ``instance`` -> InstanceNorm3d with scale and shift.

    Both norms have 2 trainable parameters per channel (Keras: BatchNormalization(epsilon=1e-5,
    momentum=0.9) / GroupNormalization(groups=channels, epsilon=1e-5)).
    """
    if norm == "batch":
        return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, eps=1e-5, affine=True, track_running_stats=False)
    return nn.Identity()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
