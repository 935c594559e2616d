"""V-Net (Milletari et al. 2016): residual stages, 5³ kernels, PReLU, strided-conv down-sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from adapters.tf.nets import check_divisible, conv, int_tuple, model_input, positive_int, prelu, up_conv
from bench.errors import ConfigError


@dataclass(frozen=True)
class VNet:
    """V-Net with ``S = len(widths)`` stages (stage ``S-1`` is the bottom).

    Stage 0: ``y = Conv 1³ (in -> w_0)``; ``convs[0]`` × PReLU(Conv k³); ``out_0 = z + y``.
    Down stage i: ``y = PReLU(Conv 2³ stride 2 (w_{i-1} -> w_i))``; ``convs[i]`` × PReLU(Conv k³);
    ``out_i = z + y``. Up stage i (from the bottom): ``u = PReLU(ConvTranspose 2³ stride 2 -> w_i)``;
    ``z = concat([u, out_i])``; ``convs[i]`` × PReLU(Conv k³) (first ``2 w_i -> w_i``); ``x = z + u``.
    Head: Conv 1³ to ``num_classes`` logits. PReLU has one slope per channel.

    Args:
        in_channels: Image channels.
        num_classes: Output classes (logits).
        widths: Features per stage.
        convs: Convolutions per stage (same length as ``widths``).
        kernel_size: Kernel edge of the stage convolutions (V-Net: 5).

    Example:
        >>> net = VNet(widths=(8, 16, 32), convs=(1, 2, 2))
        >>> model = net.build()                      # input [B, X, Y, Z, 1] -> logits [B, X, Y, Z, 4]
        >>> net.check_patch_size((32, 32, 16))       # every axis divisible by 2**(S-1) = 4
    """

    in_channels: int = 1
    num_classes: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    convs: tuple[int, ...] = (1, 2, 3, 3, 3)
    kernel_size: int = 5

    def __post_init__(self) -> None:
        for name in ("in_channels", "kernel_size"):
            positive_int(f"vnet.{name}", getattr(self, name))
        positive_int("vnet.num_classes", self.num_classes, minimum=2)
        widths = int_tuple("vnet.widths", self.widths)
        convs = int_tuple("vnet.convs", self.convs)
        if len(widths) != len(convs):
            raise ConfigError(
                f"vnet.widths={list(widths)} and vnet.convs={list(convs)} must have the same length"
            )
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "convs", convs)

    @property
    def divisor(self) -> int:
        """Every patch axis must be a multiple of this."""
        return int(2 ** (len(self.widths) - 1))

    def check_patch_size(self, shape: tuple[int, ...]) -> None:
        """ConfigError naming ``shape`` unless the network can take it."""
        check_divisible("vnet", shape, self.divisor)

    def _convs(self, z: Any, width: int, count: int) -> Any:
        for _ in range(count):
            z = prelu(conv(z, width, self.kernel_size))
        return z

    def build(self) -> keras.Model:
        """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]``."""
        inputs = model_input(self.in_channels)
        y = conv(inputs, self.widths[0], 1)
        outs = [keras.layers.Add()([self._convs(y, self.widths[0], self.convs[0]), y])]
        for i in range(1, len(self.widths)):
            y = prelu(conv(outs[-1], self.widths[i], 2, stride=2))
            outs.append(keras.layers.Add()([self._convs(y, self.widths[i], self.convs[i]), y]))
        x = outs[-1]
        for i in range(len(self.widths) - 2, -1, -1):
            u = prelu(up_conv(x, self.widths[i], 2))
            z = keras.layers.Concatenate(axis=-1)([u, outs[i]])
            x = keras.layers.Add()([self._convs(z, self.widths[i], self.convs[i]), u])
        logits = conv(x, self.num_classes, 1)
        return keras.Model(inputs, logits, name="vnet")
