"""V-Net (Milletari et al. 2016) in Keras, channels-last; arguments and structure: ``VNetConfig``."""

from __future__ import annotations

from typing import Any

import keras

from adapters.tf.layers import conv, model_input, prelu, up_conv
from bench.networks.configs import VNetConfig


def build_vnet(config: VNetConfig) -> keras.Model:
    """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]``.

    Example:
        >>> model = build_vnet(VNetConfig(widths=(8, 16, 32), convs=(1, 2, 2)))
    """
    widths, convs = config.widths, config.convs

    def stack(z: Any, width: int, count: int) -> Any:
        for _ in range(count):
            z = prelu(conv(z, width, config.kernel_size))
        return z

    inputs = model_input(config.in_channels)
    y = conv(inputs, widths[0], 1)
    outs = [keras.layers.Add()([stack(y, widths[0], convs[0]), y])]
    for i in range(1, len(widths)):
        y = prelu(conv(outs[-1], widths[i], 2, stride=2))
        outs.append(keras.layers.Add()([stack(y, widths[i], convs[i]), y]))
    x = outs[-1]
    for i in range(len(widths) - 2, -1, -1):
        u = prelu(up_conv(x, widths[i], 2))
        z = keras.layers.Concatenate(axis=-1)([u, outs[i]])
        x = keras.layers.Add()([stack(z, widths[i], convs[i]), u])
    return keras.Model(inputs, conv(x, config.num_classes, 1), name="vnet")
