"""The paper's 3D U-Net (Section 4.2): one 3x3x3 conv per level and additive skips by default."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adapters.torch.nets import (
    NORMS,
    check_choice,
    check_int,
    check_patch_size,
    check_rate,
    conv3d,
    make_norm,
    up_conv3d,
)

NAME = "unet3d"
SKIPS: tuple[str, ...] = ("add", "concat")


def conv_block(c_in: int, filters: int, convs: int, norm: str) -> nn.Sequential:
    """``convs`` x [Conv3d 3x3x3 (c_in -> filters, then filters -> filters), norm, ReLU]."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [conv3d(c_in if i == 0 else filters, filters, 3), make_norm(norm, filters), nn.ReLU()]
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """3D U-Net with ``depth`` levels; level ``depth-1`` is the bottleneck.

    Level ``i`` has ``base_filters * 2**i`` feature maps. Encoder levels after the first start with a
    2x2x2 max-pool; decoder levels start with a 2x2x2 stride-2 transposed conv and merge the encoder
    features by addition (``skip="add"``, the paper's choice) or concatenation. A 1x1x1 conv gives logits.

    Args:
        in_channels: Input channels (1 for T1).
        num_classes: Output classes (4: background, CSF, GM, WM).
        base_filters: Feature maps at level 0 (paper: 32, or 64 to reach 512 at depth 4).
        depth: Number of resolution levels (patch sizes must be divisible by ``2**(depth-1)``).
        convs_per_level: 3x3x3 convs per block (paper: 1; the original U-Net: 2).
        skip: ``"add"`` or ``"concat"``.
        norm: ``"none"``, ``"batch"`` or ``"instance"`` (after every 3x3x3 conv).
        dropout: Element-wise dropout rate after the bottleneck and after each decoder block (0 = none).

    Example:
        >>> net = UNet3D(base_filters=8, depth=3)
        >>> net(torch.zeros(2, 1, 16, 16, 16)).shape
        torch.Size([2, 4, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        base_filters: int = 32,
        depth: int = 4,
        convs_per_level: int = 1,
        skip: str = "add",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = check_int(NAME, "in_channels", in_channels)
        num_classes = check_int(NAME, "num_classes", num_classes, minimum=2)
        base_filters = check_int(NAME, "base_filters", base_filters)
        self.depth = check_int(NAME, "depth", depth)
        convs = check_int(NAME, "convs_per_level", convs_per_level)
        self.skip = check_choice(NAME, "skip", skip, SKIPS)
        norm = check_choice(NAME, "norm", norm, NORMS)
        dropout = check_rate(NAME, "dropout", dropout)

        f = [base_filters * 2**i for i in range(self.depth)]
        self.encoder = nn.ModuleList(
            conv_block(in_channels if i == 0 else f[i - 1], f[i], convs, norm) for i in range(self.depth)
        )
        self.pool = nn.MaxPool3d(2)
        self.bottleneck_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        levels = range(self.depth - 2, -1, -1)
        self.ups = nn.ModuleList(up_conv3d(f[i + 1], f[i], 2) for i in levels)
        merged = 2 if self.skip == "concat" else 1
        self.decoder = nn.ModuleList(
            nn.Sequential(
                conv_block(merged * f[i], f[i], convs, norm),
                nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            )
            for i in levels
        )
        self.head = nn.Conv3d(f[0], num_classes, 1, bias=True)

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this along every axis."""
        return int(2 ** (self.depth - 1))

    def check_patch_size(self, patch_size: Sequence[int]) -> tuple[int, int, int]:
        """Raise ConfigError unless every axis of ``patch_size`` is divisible by ``2**(depth-1)``."""
        why = f"depth={self.depth} halves it {self.depth - 1} times"
        return check_patch_size(NAME, patch_size, self.divisor, why)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` -> logits ``[B, K, X, Y, Z]``."""
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = self.bottleneck_dropout(skips.pop())
        for up, block in zip(self.ups, self.decoder, strict=True):
            enc = skips.pop()
            x = up(x)
            x = x + enc if self.skip == "add" else torch.cat([x, enc], dim=1)
            x = block(x)
        return self.head(x)
