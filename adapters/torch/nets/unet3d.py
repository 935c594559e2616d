"""The paper's 3D U-Net (Section 4.2) in PyTorch; its arguments and structure: ``UNet3DConfig``.

Options beyond the paper (``block="residual"``, ``deep_supervision``) are built only when asked for: the
default network is the paper's, parameter for parameter.
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.torch.layers import conv3d, make_norm, up_conv3d
from bench.networks.configs import UNet3DConfig


def conv_block(c_in: int, filters: int, convs: int, norm: str) -> nn.Sequential:
    """``convs`` x [Conv3d 3x3x3 (c_in -> filters, then filters -> filters), norm, ReLU]."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [conv3d(c_in if i == 0 else filters, filters, 3), make_norm(norm, filters), nn.ReLU()]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """``ReLU(main(x) + shortcut(x))``: ``main`` is ``conv_block`` without its last ReLU; the shortcut is the
    identity, or a 1x1x1 conv (with bias) when ``c_in != filters``."""

    def __init__(self, c_in: int, filters: int, convs: int, norm: str) -> None:
        super().__init__()
        self.main = nn.Sequential(*list(conv_block(c_in, filters, convs, norm))[:-1])
        self.shortcut = nn.Conv3d(c_in, filters, 1, bias=True) if c_in != filters else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main(x)  # before the shortcut: the call order the Keras model's layers follow
        return self.relu(main + self.shortcut(x))


def level_block(c_in: int, filters: int, config: UNet3DConfig) -> nn.Module:
    """One level's block, plain or residual as ``config.block`` says."""
    if config.block == "residual":
        return ResidualBlock(c_in, filters, config.convs_per_level, config.norm)
    return conv_block(c_in, filters, config.convs_per_level, config.norm)


def maybe_dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class UNet3D(nn.Module):
    """3D U-Net with ``config.depth`` levels; level ``depth-1`` is the bottleneck (see ``UNet3DConfig``).

    ``forward`` gives the full-resolution logits; ``forward_heads`` (for training with deep supervision) all
    heads' logits, full resolution first, then decoder levels ``1..deep_supervision``.

    Example:
        >>> net = UNet3D(UNet3DConfig(base_filters=8, depth=3))
        >>> net(torch.zeros(2, 1, 16, 16, 16)).shape
        torch.Size([2, 4, 16, 16, 16])
    """

    def __init__(self, config: UNet3DConfig) -> None:
        super().__init__()
        self.config = config
        self.deep_supervision = config.deep_supervision
        f = config.filters
        self.encoder = nn.ModuleList(
            level_block(config.in_channels if i == 0 else f[i - 1], f[i], config) for i in range(config.depth)
        )
        self.pool = nn.MaxPool3d(2)
        self.bottleneck_dropout = maybe_dropout(config.dropout)
        levels = range(config.depth - 2, -1, -1)
        self.ups = nn.ModuleList(up_conv3d(f[i + 1], f[i], 2) for i in levels)
        merged = 2 if config.skip == "concat" else 1
        self.decoder = nn.ModuleList(
            nn.Sequential(level_block(merged * f[i], f[i], config), maybe_dropout(config.dropout)) for i in levels
        )
        self.head = nn.Conv3d(f[0], config.num_classes, 1, bias=True)
        if self.deep_supervision:  # only then: the paper's network keeps its exact parameter set
            self.aux_heads = nn.ModuleList(
                nn.Conv3d(f[i], config.num_classes, 1, bias=True) for i in range(1, self.deep_supervision + 1))

    def decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's output at every level, deepest first (the last is full resolution)."""
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = self.bottleneck_dropout(skips.pop())
        outputs = []
        for up, block in zip(self.ups, self.decoder, strict=True):
            enc = skips.pop()
            x = up(x)
            x = x + enc if self.config.skip == "add" else torch.cat([x, enc], dim=1)
            x = block(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` -> logits ``[B, K, X, Y, Z]``."""
        return self.head(self.decode(x)[-1])

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head: ``[B, K, X, Y, Z]``, then ``[B, K, X/2**i, Y/2**i, Z/2**i]`` for ``i = 1..k``."""
        levels = self.decode(x)[::-1]  # full resolution first
        main = self.head(levels[0])
        if not self.deep_supervision:
            return [main]
        return [main, *(head(levels[i]) for i, head in enumerate(self.aux_heads, start=1))]
