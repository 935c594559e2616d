"""Single-output NeuroNet (Rajchl et al. 2018): a U-Net with a pre-activation residual encoder (as DLTK)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras

from adapters.tf.nets import (
    NORMS,
    check_divisible,
    choice,
    conv,
    int_tuple,
    model_input,
    norm,
    positive_int,
    relu,
    up_conv,
)
from bench.errors import ConfigError


@dataclass(frozen=True)
class NeuroNet:
    """Residual-encoder U-Net.

    Residual unit (c_in -> f, stride s), pre-activation: ``h = Conv 3³(f->f)(ReLU(norm(Conv 3³ stride s
    (c_in->f)(ReLU(norm(x))))))``; shortcut ``x`` when ``s == 1 and c_in == f``, else Conv 1³ stride s.
    Stem: Conv 3³ to ``filters[0]``. Scale j: one unit with stride ``strides[j]`` then
    ``units_per_scale - 1`` units with stride 1. Decoder j (from the bottom): up-sample ``filters[j+1] ->
    filters[j]`` (ConvTranspose kernel = stride = ``strides[j+1]``, or Conv 1³ when that stride is 1), add
    the encoder output of scale j, one unit. Head: norm, ReLU, Conv 1³ to ``num_classes`` logits.

    Args:
        in_channels: Image channels.
        num_classes: Output classes (logits).
        filters: Features per scale.
        strides: Down-sampling stride entering each scale (same length as ``filters``; the first must be 1
            since the decoder never undoes it).
        units_per_scale: Residual units per encoder scale.
        norm: ``batch`` (DLTK's), ``none`` or ``instance``.

    Example:
        >>> net = NeuroNet(filters=(8, 16, 32), strides=(1, 2, 2))
        >>> model = net.build()                      # input [B, X, Y, Z, 1] -> logits [B, X, Y, Z, 4]
        >>> net.check_patch_size((32, 32, 16))       # every axis divisible by prod(strides) = 4
    """

    in_channels: int = 1
    num_classes: int = 4
    filters: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (1, 2, 2, 2)
    units_per_scale: int = 2
    norm: str = "batch"

    def __post_init__(self) -> None:
        for name in ("in_channels", "units_per_scale"):
            positive_int(f"neuronet.{name}", getattr(self, name))
        positive_int("neuronet.num_classes", self.num_classes, minimum=2)
        choice("neuronet.norm", self.norm, NORMS)
        filters = int_tuple("neuronet.filters", self.filters)
        strides = int_tuple("neuronet.strides", self.strides)
        if len(filters) != len(strides):
            raise ConfigError(
                f"neuronet.filters={list(filters)} and neuronet.strides={list(strides)} must have the "
                "same length"
            )
        if strides[0] != 1:
            raise ConfigError(
                f"neuronet.strides={list(strides)}: the first stride must be 1 (the decoder never undoes it)"
            )
        object.__setattr__(self, "filters", filters)
        object.__setattr__(self, "strides", strides)

    @property
    def divisor(self) -> int:
        """Every patch axis must be a multiple of this."""
        return math.prod(self.strides)

    def check_patch_size(self, shape: tuple[int, ...]) -> None:
        """ConfigError naming ``shape`` unless the network can take it."""
        check_divisible("neuronet", shape, self.divisor)

    def _unit(self, x: Any, filters: int, stride: int) -> Any:
        c_in = int(x.shape[-1])
        h = conv(relu(norm(x, self.norm)), filters, 3, stride)
        h = conv(relu(norm(h, self.norm)), filters, 3)
        shortcut = x if (stride == 1 and c_in == filters) else conv(x, filters, 1, stride)
        return keras.layers.Add()([h, shortcut])

    def build(self) -> keras.Model:
        """The Keras model: ``float32[B, X, Y, Z, in_channels]`` -> logits ``[B, X, Y, Z, num_classes]``."""
        inputs = model_input(self.in_channels)
        x = conv(inputs, self.filters[0], 3)
        encoded = []
        for filters, stride in zip(self.filters, self.strides, strict=True):
            x = self._unit(x, filters, stride)
            for _ in range(self.units_per_scale - 1):
                x = self._unit(x, filters, 1)
            encoded.append(x)
        for j in range(len(self.filters) - 2, -1, -1):
            stride = self.strides[j + 1]
            up = up_conv(x, self.filters[j], stride) if stride > 1 else conv(x, self.filters[j], 1)
            x = self._unit(keras.layers.Add()([up, encoded[j]]), self.filters[j], 1)
        logits = conv(relu(norm(x, self.norm)), self.num_classes, 1)
        return keras.Model(inputs, logits, name="neuronet")
