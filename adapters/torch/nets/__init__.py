"""PyTorch networks (one file each) and the small helpers they share.

Every network maps ``float32[B, C, X, Y, Z]`` to logits ``[B, K, X, Y, Z]``, has ``bias=True`` on every
convolution and "same" padding everywhere. Strided convolutions pad like TensorFlow's ``padding="same"``
(the extra voxel, if any, goes after), so the torch and TF networks compute the same function.
Weights use PyTorch's default initialisation (Kaiming-uniform with ``a=sqrt(5)`` for convolutions, biases
uniform in ``±1/sqrt(fan_in)``; norms start at scale 1, shift 0; PReLU slopes at 0.25).

The classes live in ``unet3d``, ``vnet`` and ``neuronet``; ``adapters.torch.segmenter.NETWORKS`` maps
architecture names to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from torch import nn

from bench.errors import ConfigError

NORMS: tuple[str, ...] = ("none", "batch", "instance")


def check_int(net: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools are rejected), else ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{net} {name}={value!r} must be an integer >= {minimum}")
    return int(value)


def check_int_tuple(net: str, name: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of ints >= ``minimum`` as a tuple, else ConfigError naming it."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{net} {name}={value!r} must be a non-empty list of integers >= {minimum}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, Integral) or item < minimum:
            raise ConfigError(f"{net} {name}={value!r} must be a non-empty list of integers >= {minimum}")
    return tuple(int(item) for item in value)


def check_choice(net: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ConfigError naming it."""
    if value not in choices:
        raise ConfigError(f"{net} {name}={value!r} is unknown", fix=f"use one of {', '.join(choices)}")
    return str(value)


def check_rate(net: str, name: str, value: Any) -> float:
    """A probability in ``[0, 1)``, else ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{net} {name}={value!r} must be a number in [0, 1)")
    return float(value)


def check_patch_size(net: str, patch_size: Sequence[int], divisor: int, why: str) -> tuple[int, int, int]:
    """Check that a 3D patch size is divisible by ``divisor`` along every axis.

    Args:
        net: Network name, for the message.
        patch_size: ``(x, y, z)`` in voxels.
        divisor: Required divisor (the network's total downsampling factor).
        why: Which setting makes the divisor, e.g. ``"depth=4 halves it 3 times"``.

    Raises:
        ConfigError: Not three positive ints, or an axis not divisible by ``divisor``.
    """
    size = tuple(patch_size)
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 1 for s in size):
        raise ConfigError(f"{net}: patch size {size!r} must be three positive integers (x, y, z)")
    for axis, s in enumerate(size):
        if s % divisor:
            raise ConfigError(
                f"{net}: patch size {size} is not divisible by {divisor} along axis {axis} (size {s}; {why})",
                fix=f"use patch sizes that are multiples of {divisor}",
            )
    return int(size[0]), int(size[1]), int(size[2])


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
