"""Layers the Keras networks share (their arguments are checked once, in ``bench.networks.configs``).

Conventions shared with the PyTorch adapter (so both build the same networks):
- every convolution has a bias and Keras "same" padding, strided ones included (for stride s the
  ``max(k - s, 0)`` padding voxels are split with the odd one after; the torch networks pad the same way).
- weight init is the Keras default (Glorot-uniform kernels, zero biases; torch uses Kaiming-uniform):
  parity is in architecture and training semantics, not initial values.
"""

from __future__ import annotations

from typing import Any

import keras  # adapters/tf/__init__.py (always imported first) has selected the tensorflow backend

from bench.networks.configs import ILN_RHO_INIT

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


class InstanceLayerNormalization(keras.layers.Layer):
    """Instance-layer normalisation, the Keras twin of ``adapters.torch.layers.InstanceLayerNorm3d``.

    ``y = gamma * (rho * IN(x) + (1 - rho) * LN(x)) + beta`` per channel (channels last), ``rho`` learned and
    clipped to [0, 1] in the call; computed in float32 whatever the mixed-precision policy. Weights in the
    order gamma, beta, rho (torch: weight, bias, rho).
    """

    def __init__(self, epsilon: float = IN_EPSILON, **kwargs: Any) -> None:
        kwargs.pop("dtype", None)  # always float32 (from_config passes the saved one back)
        super().__init__(dtype="float32", **kwargs)
        self.epsilon = epsilon

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.rho = self.add_weight(shape=(channels,), initializer=keras.initializers.Constant(ILN_RHO_INIT),
                                   name="rho")

    def call(self, x: Any) -> Any:
        ops = keras.ops
        mean_in = ops.mean(x, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1, C]
        var_in = ops.mean(ops.square(x - mean_in), axis=(1, 2, 3), keepdims=True)
        mean_ln = ops.mean(mean_in, axis=-1, keepdims=True)  # as the torch layer: layer stats from instance ones
        var_ln = ops.mean(var_in + ops.square(mean_in), axis=-1, keepdims=True) - ops.square(mean_ln)
        inv_in, inv_ln = ops.rsqrt(var_in + self.epsilon), ops.rsqrt(ops.maximum(var_ln, 0.0) + self.epsilon)
        rho = ops.clip(self.rho, 0.0, 1.0)
        scale = self.gamma * (rho * inv_in + (1.0 - rho) * inv_ln)
        shift = self.beta - self.gamma * (rho * mean_in * inv_in + (1.0 - rho) * mean_ln * inv_ln)
        return x * scale + shift

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


def norm(x: Any, kind: str) -> Any:
    """``none`` (identity), ``batch`` (BatchNorm), ``instance`` (per-sample, per-channel, affine) or
    ``instance_layer`` (InstanceLayerNormalization)."""
    if kind == "none":
        return x
    if kind == "batch":
        return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM)(x)
    if kind == "instance_layer":
        return InstanceLayerNormalization()(x)
    channels = int(x.shape[-1])
    return keras.layers.GroupNormalization(groups=channels, epsilon=IN_EPSILON)(x)


def prelu(x: Any) -> Any:
    """PReLU with one learnable slope per channel (torch ``nn.PReLU(num_parameters=C)``, init 0.25)."""
    return keras.layers.PReLU(
        alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2, 3]
    )(x)


def relu(x: Any) -> Any:
    return keras.layers.ReLU()(x)
