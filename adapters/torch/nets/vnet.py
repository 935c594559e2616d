"""V-Net (Milletari et al. 2016; the paper's Section 4.4) in PyTorch; arguments and structure: ``VNetConfig``."""

from __future__ import annotations

import torch
from torch import nn

from adapters.torch.layers import conv3d, up_conv3d
from bench.networks.configs import VNetConfig


def conv_prelu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (bias, "same") followed by PReLU with one slope per output channel."""
    return nn.Sequential(conv3d(c_in, c_out, kernel, stride), nn.PReLU(num_parameters=c_out))


def conv_stack(c_first: int, width: int, n: int, kernel: int) -> nn.Sequential:
    """``n`` x PReLU(Conv k^3): the first maps ``c_first -> width``, the rest ``width -> width``."""
    return nn.Sequential(*(conv_prelu(c_first if i == 0 else width, width, kernel) for i in range(n)))


class VNet(nn.Module):
    """V-Net with ``S = len(config.widths)`` stages; stage ``S-1`` is the bottom (see ``VNetConfig``).

    Example:
        >>> net = VNet(VNetConfig(widths=(8, 16, 32), convs=(1, 1, 1), kernel_size=3))
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 4, 16, 16, 16])
    """

    def __init__(self, config: VNetConfig) -> None:
        super().__init__()
        w, n, k = config.widths, config.convs, config.kernel_size
        stages = len(w)
        self.project = nn.Conv3d(config.in_channels, w[0], 1, bias=True)
        self.down = nn.ModuleList(
            [nn.Identity()] + [conv_prelu(w[i - 1], w[i], 2, stride=2) for i in range(1, stages)]
        )
        self.encoder = nn.ModuleList(conv_stack(w[i], w[i], n[i], k) for i in range(stages))
        levels = range(stages - 2, -1, -1)
        self.ups = nn.ModuleList(
            nn.Sequential(up_conv3d(w[i + 1], w[i], 2), nn.PReLU(num_parameters=w[i])) for i in levels
        )
        self.decoder = nn.ModuleList(conv_stack(2 * w[i], w[i], n[i], k) for i in levels)
        self.head = nn.Conv3d(w[0], config.num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, X, Y, Z]`` -> logits ``[B, K, X, Y, Z]``."""
        skips: list[torch.Tensor] = []
        x = self.project(x)
        for down, stage in zip(self.down, self.encoder, strict=True):
            y = down(x)
            x = stage(y) + y
            skips.append(x)
        x = skips.pop()
        for up, stage in zip(self.ups, self.decoder, strict=True):
            u = up(x)
            x = stage(torch.cat([u, skips.pop()], dim=1)) + u
        return self.head(x)
