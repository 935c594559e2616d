"""Layers the Keras networks share (their arguments are checked once, in ``adapters.configs``).

Conventions shared with the PyTorch adapter (so both build the same networks):
- every convolution has a bias and Keras "same" padding, strided ones included (for stride s the
  ``max(k - s, 0)`` padding voxels are split with the odd one after; the torch networks pad the same way).
- weight init is the Keras default (Glorot-uniform kernels, zero biases; torch uses Kaiming-uniform):
  parity is in architecture and training semantics, not initial values.
"""

from __future__ import annotations

from typing import Any

import keras  # adapters/tf/__init__.py (always imported first) has selected the tensorflow backend

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
"""Keras momentum 0.9 is torch's BatchNorm3d momentum 0.1 (the weight of the running value)."""
IN_EPSILON = 1e-5


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
