"""Single-output NeuroNet (Rajchl et al. 2018; the paper's Section 4.3): a U-Net with a residual encoder.

Follows DLTK's residual U-Net: pre-activation residual units, strided-conv downsampling, transposed-conv
upsampling and additive merges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from adapters.torch.nets import (
    NORMS,
    check_choice,
    check_int,
    check_int_tuple,
    check_patch_size,
    conv3d,
    make_norm,
    up_conv3d,
)
from bench.errors import ConfigError

NAME = "neuronet"


class ResidualUnit(nn.Module):
    """Pre-activation residual unit ``c_in -> filters`` with the first conv strided by ``stride``.

    ``h = Conv3(ReLU(norm(Conv3_s(ReLU(norm(x))))))``; the shortcut is ``x`` when ``stride == 1`` and
    ``c_in == filters``, else a 1x1x1 conv with stride ``stride``. Output ``h + shortcut``.
    """

    def __init__(self, c_in: int, filters: int, stride: int, norm: str) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            make_norm(norm, c_in),
            nn.ReLU(),
            conv3d(c_in, filters, 3, stride),
            make_norm(norm, filters),
            nn.ReLU(),
            conv3d(filters, filters, 3),
        )
        identity = stride == 1 and c_in == filters
        self.shortcut = nn.Identity() if identity else conv3d(c_in, filters, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class NeuroNet(nn.Module):
    """Residual-encoder U-Net with one scale per entry of ``filters``.

    Stem: 3x3x3 conv to ``filters[0]``. Encoder scale ``j``: one residual unit with stride ``strides[j]``
    then ``units_per_scale - 1`` units with stride 1. Decoder scale ``j`` (from the second-deepest up):
    upsample the deeper output (transposed conv with kernel = stride = ``strides[j+1]``, or a 1x1x1 conv
    when that stride is 1), add the encoder output of scale ``j``, one residual unit. Head: norm, ReLU,
    1x1x1 conv to logits.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        filters: Feature maps per scale (NeuroNet: 16, 32, 64, 128).
        strides: Downsampling factor entering each scale; ``strides[0]`` must be 1 (the output keeps the
            input size). Patch sizes must be divisible by their product.
        units_per_scale: Residual units per encoder scale (NeuroNet: 2).
        norm: ``"batch"`` (NeuroNet), ``"none"`` or ``"instance"``.

    Example:
        >>> net = NeuroNet(filters=(8, 16), strides=(1, 2), norm="none")
        >>> net(torch.zeros(1, 1, 8, 8, 8)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        filters: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (1, 2, 2, 2),
        units_per_scale: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        in_channels = check_int(NAME, "in_channels", in_channels)
        num_classes = check_int(NAME, "num_classes", num_classes, minimum=2)
        f = check_int_tuple(NAME, "filters", filters)
        self.strides = check_int_tuple(NAME, "strides", strides)
        units = check_int(NAME, "units_per_scale", units_per_scale)
        norm = check_choice(NAME, "norm", norm, NORMS)
        if len(f) != len(self.strides):
            raise ConfigError(
                f"{NAME} filters={f} and strides={self.strides} must have the same length (one per scale)"
            )
        if self.strides[0] != 1:
            raise ConfigError(
                f"{NAME} strides={self.strides}: the first stride must be 1 (the decoder never undoes it)"
            )

        self.stem = conv3d(in_channels, f[0], 3)
        self.encoder = nn.ModuleList(
            nn.Sequential(
                ResidualUnit(f[j - 1] if j else f[0], f[j], self.strides[j], norm),
                *(ResidualUnit(f[j], f[j], 1, norm) for _ in range(units - 1)),
            )
            for j in range(len(f))
        )
        levels = range(len(f) - 2, -1, -1)
        self.ups = nn.ModuleList(
            up_conv3d(f[j + 1], f[j], self.strides[j + 1])
            if self.strides[j + 1] > 1
            else nn.Conv3d(f[j + 1], f[j], 1, bias=True)
            for j in levels
        )
        self.decoder = nn.ModuleList(ResidualUnit(f[j], f[j], 1, norm) for j in levels)
        self.head = nn.Sequential(make_norm(norm, f[0]), nn.ReLU(), nn.Conv3d(f[0], num_classes, 1, bias=True))

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this along every axis."""
        return math.prod(self.strides)

    def check_patch_size(self, patch_size: Sequence[int]) -> tuple[int, int, int]:
        """Raise ConfigError unless every axis of ``patch_size`` is divisible by the product of strides."""
        why = f"strides={self.strides} downsample by {self.divisor} in total"
        return check_patch_size(NAME, patch_size, self.divisor, why)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` -> logits ``[B, K, X, Y, Z]``."""
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for scale in self.encoder:
            x = scale(x)
            skips.append(x)
        x = skips.pop()
        for up, unit in zip(self.ups, self.decoder, strict=True):
            x = unit(up(x) + skips.pop())
        return self.head(x)
