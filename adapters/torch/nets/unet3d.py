"""The paper's 3D U-Net (Section 4.2) in PyTorch; its arguments and structure: ``UNet3DConfig``."""

from __future__ import annotations

import torch
from torch import nn

from adapters.configs import UNet3DConfig
from adapters.torch.layers import conv3d, make_norm, up_conv3d


def conv_block(c_in: int, filters: int, convs: int, norm: str) -> nn.Sequential:
    """``convs`` x [Conv3d 3x3x3 (c_in -> filters, then filters -> filters), norm, ReLU]."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [conv3d(c_in if i == 0 else filters, filters, 3), make_norm(norm, filters), nn.ReLU()]
    return nn.Sequential(*layers)


def maybe_dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class UNet3D(nn.Module):
    """3D U-Net with ``config.depth`` levels; level ``depth-1`` is the bottleneck (see ``UNet3DConfig``).

    Example:
        >>> net = UNet3D(UNet3DConfig(base_filters=8, depth=3))
        >>> net(torch.zeros(2, 1, 16, 16, 16)).shape
        torch.Size([2, 4, 16, 16, 16])
    """

    def __init__(self, config: UNet3DConfig) -> None:
        super().__init__()
        self.config = config
        f, convs, norm = config.filters, config.convs_per_level, config.norm
        self.encoder = nn.ModuleList(
            conv_block(config.in_channels if i == 0 else f[i - 1], f[i], convs, norm) for i in range(config.depth)
        )
        self.pool = nn.MaxPool3d(2)
        self.bottleneck_dropout = maybe_dropout(config.dropout)
        levels = range(config.depth - 2, -1, -1)
        self.ups = nn.ModuleList(up_conv3d(f[i + 1], f[i], 2) for i in levels)
        merged = 2 if config.skip == "concat" else 1
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_block(merged * f[i], f[i], convs, norm), maybe_dropout(config.dropout))
            for i in levels
        )
        self.head = nn.Conv3d(f[0], config.num_classes, 1, bias=True)

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
            x = x + enc if self.config.skip == "add" else torch.cat([x, enc], dim=1)
            x = block(x)
        return self.head(x)
