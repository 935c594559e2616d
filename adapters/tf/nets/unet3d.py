"""The paper's 3D U-Net (one conv per level, additive skips by default), channels-last Keras."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from adapters.tf.nets import (
    NORMS,
    check_divisible,
    choice,
    conv,
    model_input,
    norm,
    positive_int,
    rate,
    relu,
    up_conv,
)

SKIPS: tuple[str, ...] = ("add", "concat")


@dataclass(frozen=True)
class UNet3D:
    """3D U-Net: ``depth`` levels of ``f_i = base_filters * 2**i`` features, level ``depth-1`` the bottleneck.

    Level block: ``convs_per_level`` × [Conv 3³, norm, ReLU]. Encoder: block, then MaxPool 2³ + block per
    level. Decoder: ConvTranspose (kernel 2, stride 2) to ``f_i``, skip by sum (``add``, the paper's) or
    concatenation, block. Optional Dropout after the bottleneck and after every decoder block. Head:
    Conv 1³ to ``num_classes`` logits.

    Args:
        in_channels: Image channels.
        num_classes: Output classes (logits).
        base_filters: Features of level 0.
        depth: Number of levels (>= 1; 1 is a plain conv block and head).
        convs_per_level: Convolutions per block.
        skip: ``add`` or ``concat``.
        norm: ``none``, ``batch`` or ``instance``.
        dropout: Dropout rate in [0, 1) (0 disables it).

    Example:
        >>> net = UNet3D(base_filters=8, depth=3)
        >>> model = net.build()                      # input [B, X, Y, Z, 1] -> logits [B, X, Y, Z, 4]
        >>> net.check_patch_size((32, 32, 24))       # every axis divisible by 2**(depth-1) = 4
    """

    in_channels: int = 1
    num_classes: int = 4
    base_filters: int = 32
    depth: int = 4
    convs_per_level: int = 1
    skip: str = "add"
    norm: str = "none"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "base_filters", "depth", "convs_per_level"):
            positive_int(f"unet3d.{name}", getattr(self, name))
        positive_int("unet3d.num_classes", self.num_classes, minimum=2)
        choice("unet3d.skip", self.skip, SKIPS)
        choice("unet3d.norm", self.norm, NORMS)
        object.__setattr__(self, "dropout", rate("unet3d.dropout", self.dropout))

    @property
    def divisor(self) -> int:
        """Every patch axis must be a multiple of this."""
        return int(2 ** (self.depth - 1))

    def check_patch_size(self, shape: tuple[int, ...]) -> None:
        """ConfigError naming ``shape`` unless the network can take it."""
        check_divisible("unet3d", shape, self.divisor)

    def _block(self, x: Any, filters: int) -> Any:
        for _ in range(self.convs_per_level):
            x = relu(norm(conv(x, filters, 3), self.norm))
        return x

    def _dropout(self, x: Any) -> Any:
        return keras.layers.Dropout(self.dropout)(x) if self.dropout > 0 else x

    def build(self) -> keras.Model:
        """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]``."""
        filters = [self.base_filters * 2**i for i in range(self.depth)]
        inputs = model_input(self.in_channels)
        x = self._block(inputs, filters[0])
        skips = [x]
        for level in range(1, self.depth):
            x = keras.layers.MaxPooling3D(pool_size=2, strides=2)(x)
            x = self._block(x, filters[level])
            skips.append(x)
        x = self._dropout(x)
        for level in range(self.depth - 2, -1, -1):
            up = up_conv(x, filters[level], 2)
            if self.skip == "add":
                x = keras.layers.Add()([up, skips[level]])
            else:
                x = keras.layers.Concatenate(axis=-1)([up, skips[level]])
            x = self._dropout(self._block(x, filters[level]))
        logits = conv(x, self.num_classes, 1)
        return keras.Model(inputs, logits, name="unet3d")
