"""Keras networks (one file each) and the small pieces they share.

Every network is a frozen dataclass holding its validated constructor arguments, with ``build()``
returning a channels-last functional ``keras.Model`` whose spatial dimensions are ``None`` (one model
serves every valid patch size) and ``check_patch_size(shape)`` rejecting sizes the network cannot take.

Conventions shared with the PyTorch adapter (so both build the same networks):
- every convolution has a bias and Keras "same" padding, strided ones included (for stride s the
  ``max(k - s, 0)`` padding voxels are split with the odd one after; the torch networks pad the same way).
- weight init is the Keras default (Glorot-uniform kernels, zero biases; torch uses Kaiming-uniform):
  parity is in architecture and training semantics, not initial values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras  # adapters/tf/__init__.py (always imported first) has selected the tensorflow backend

from bench.errors import ConfigError

NORMS: tuple[str, ...] = ("none", "batch", "instance")
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
"""Keras momentum 0.9 is torch's BatchNorm3d momentum 0.1 (the weight of the running value)."""
IN_EPSILON = 1e-5


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ConfigError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ConfigError."""
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is unknown", fix=f"use one of {', '.join(allowed)}")
    return str(value)


def rate(name: str, value: Any) -> float:
    """A dropout rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name}={value!r} must be a number in [0, 1)")
    return float(value)


def int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """A non-empty sequence of ints >= 1 (lists from JSON/YAML are accepted) as a tuple."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{name}={value!r} must be a non-empty list of integers >= 1")
    return tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))


def check_divisible(name: str, shape: Sequence[int], divisor: int) -> None:
    """ConfigError unless the spatial ``shape`` is three positive multiples of ``divisor``."""
    size = tuple(int(s) for s in shape)
    bad = [axis for axis, s in enumerate(size) if s < 1 or s % divisor]
    if len(size) != 3 or bad:
        where = f" along axis {bad[0]} (size {size[bad[0]]})" if len(size) == 3 else ""
        raise ConfigError(
            f"{name}: patch size {size} is not three positive multiples of {divisor}{where}",
            fix=f"use patch sizes that are multiples of {divisor}",
        )


def model_input(in_channels: int) -> keras.KerasTensor:
    """A channels-last input with free spatial size."""
    return keras.Input(shape=(None, None, None, in_channels), dtype="float32", name="image")


def conv(x: Any, filters: int, kernel: int, stride: int = 1) -> Any:
    """Conv3D with bias and "same" padding (unpadded when ``kernel <= stride``, see below).

    When the kernel is not larger than the stride "same" needs no padding, yet TF's Eigen CPU kernels then
    centre the kernel (a 1³ stride-3 conv reads voxels 1, 4, 7, ...) while its oneDNN kernels and torch read
    0, 3, 6, ...; "valid" gives the latter everywhere and the same output size for divisible inputs.
    """
    padding = "valid" if kernel <= stride else "same"
    return keras.layers.Conv3D(filters, kernel, strides=stride, padding=padding, use_bias=True)(x)


def up_conv(x: Any, filters: int, stride: int) -> Any:
    """ConvTranspose3d with kernel = stride (exactly multiplies the spatial size by ``stride``)."""
    return keras.layers.Conv3DTranspose(filters, stride, strides=stride, padding="valid", use_bias=True)(x)


def norm(x: Any, kind: str) -> Any:
    """``none`` (identity), ``batch`` (BatchNorm) or ``instance`` (per-sample, per-channel, affine)."""
    if kind == "none":
        return x
    if kind == "batch":
        return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM)(x)
    channels = int(x.shape[-1])
    return keras.layers.GroupNormalization(groups=channels, epsilon=IN_EPSILON)(x)


def prelu(x: Any) -> Any:
    """PReLU with one learnable slope per channel (torch ``nn.PReLU(num_parameters=C)``, init 0.25)."""
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2, 3]
    )(x)


def relu(x: Any) -> Any:
    return keras.layers.ReLU()(x)
