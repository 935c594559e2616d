"""Single-output NeuroNet (Rajchl et al. 2018) in Keras, channels-last: a U-Net with a pre-activation
residual encoder as DLTK's; arguments and structure: ``NeuroNetConfig``."""

from __future__ import annotations

from typing import Any

import keras

from adapters.tf.layers import conv, model_input, norm, relu, up_conv
from bench.networks.configs import NeuroNetConfig


def build_neuronet(config: NeuroNetConfig) -> keras.Model:
    """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]``.

    Example:
        >>> model = build_neuronet(NeuroNetConfig(filters=(8, 16, 32), strides=(1, 2, 2)))
    """

    def unit(x: Any, filters: int, stride: int) -> Any:
        h = conv(relu(norm(x, config.norm)), filters, 3, stride)
        h = conv(relu(norm(h, config.norm)), filters, 3)
        identity = stride == 1 and int(x.shape[-1]) == filters
        return keras.layers.Add()([h, x if identity else conv(x, filters, 1, stride)])

    inputs = model_input(config.in_channels)
    x = conv(inputs, config.filters[0], 3)
    encoded = []
    for filters, stride in zip(config.filters, config.strides, strict=True):
        x = unit(x, filters, stride)
        for _ in range(config.units_per_scale - 1):
            x = unit(x, filters, 1)
        encoded.append(x)
    for j in range(len(config.filters) - 2, -1, -1):
        stride = config.strides[j + 1]
        up = up_conv(x, config.filters[j], stride) if stride > 1 else conv(x, config.filters[j], 1)
        x = unit(keras.layers.Add()([up, encoded[j]]), config.filters[j], 1)
    logits = conv(relu(norm(x, config.norm)), config.num_classes, 1)
    return keras.Model(inputs, logits, name="neuronet")
