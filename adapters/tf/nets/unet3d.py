"""The paper's 3D U-Net (Section 4.2) in Keras, channels-last; arguments and structure: ``UNet3DConfig``.

Options beyond the paper (``block="residual"``, ``deep_supervision``) are built only when asked for. With
deep supervision the model has ``1 + deep_supervision`` outputs (full resolution first); ``adapters.tf``
predicts and validates with the first.
"""

from __future__ import annotations

from typing import Any

import keras

from adapters.tf.layers import conv, model_input, norm, relu, up_conv
from bench.networks.configs import UNet3DConfig


def build_unet3d(config: UNet3DConfig) -> keras.Model:
    """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]`` (a list of
    logits per head with deep supervision).

    Example:
        >>> model = build_unet3d(UNet3DConfig(base_filters=8, depth=3))
    """

    def block(x: Any, filters: int) -> Any:
        inputs = x
        for i in range(config.convs_per_level):
            x = norm(conv(x, filters, 3), config.norm)
            if config.block == "plain" or i < config.convs_per_level - 1:
                x = relu(x)
        if config.block == "plain":
            return x
        shortcut = inputs if int(inputs.shape[-1]) == filters else conv(inputs, filters, 1)
        return relu(keras.layers.Add()([x, shortcut]))  # main first: the layer order torch's call order follows

    def dropout(x: Any) -> Any:
        return keras.layers.Dropout(config.dropout)(x) if config.dropout > 0 else x

    filters = config.filters
    inputs = model_input(config.in_channels)
    x = block(inputs, filters[0])
    skips = [x]
    for level in range(1, config.depth):
        x = block(keras.layers.MaxPooling3D(pool_size=2, strides=2)(x), filters[level])
        skips.append(x)
    x = dropout(x)
    decoded: dict[int, Any] = {}
    for level in range(config.depth - 2, -1, -1):
        up = up_conv(x, filters[level], 2)
        merge = keras.layers.Add() if config.skip == "add" else keras.layers.Concatenate(axis=-1)
        x = dropout(block(merge([up, skips[level]]), filters[level]))
        decoded[level] = x
    main = conv(x, config.num_classes, 1)
    if not config.deep_supervision:
        return keras.Model(inputs, main, name="unet3d")
    heads = [conv(decoded[level], config.num_classes, 1) for level in range(1, config.deep_supervision + 1)]
    return keras.Model(inputs, [main, *heads], name="unet3d")
