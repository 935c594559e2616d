"""Single-output NeuroNet (Rajchl et al. 2018; the paper's Section 4.3) in PyTorch: a U-Net with a residual
encoder as DLTK's (pre-activation units, strided-conv down-sampling, additive merges); see ``NeuroNetConfig``.
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.torch.layers import conv3d, make_norm, up_conv3d
from bench.networks.configs import NeuroNetConfig


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
    """Residual-encoder U-Net with one scale per entry of ``config.filters`` (see ``NeuroNetConfig``).

    Example:
        >>> net = NeuroNet(NeuroNetConfig(filters=(8, 16), strides=(1, 2), norm="none"))
        >>> net(torch.zeros(1, 1, 8, 8, 8)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    def __init__(self, config: NeuroNetConfig) -> None:
        super().__init__()
        f, strides, norm = config.filters, config.strides, config.norm
        self.stem = conv3d(config.in_channels, f[0], 3)
        self.encoder = nn.ModuleList(
            nn.Sequential(
                ResidualUnit(f[j - 1] if j else f[0], f[j], strides[j], norm),
                *(ResidualUnit(f[j], f[j], 1, norm) for _ in range(config.units_per_scale - 1)),
            )
            for j in range(len(f))
        )
        levels = range(len(f) - 2, -1, -1)
        self.ups = nn.ModuleList(
            up_conv3d(f[j + 1], f[j], strides[j + 1]) if strides[j + 1] > 1 else nn.Conv3d(f[j + 1], f[j], 1, bias=True)
            for j in levels
        )
        self.decoder = nn.ModuleList(ResidualUnit(f[j], f[j], 1, norm) for j in levels)
        self.head = nn.Sequential(make_norm(norm, f[0]), nn.ReLU(), nn.Conv3d(f[0], config.num_classes, 1, bias=True))

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
