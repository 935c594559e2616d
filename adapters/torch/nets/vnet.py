"""V-Net (Milletari et al. 2016; the paper's Section 4.4): residual stages, 5x5x5 convs, PReLU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adapters.torch.nets import check_int, check_int_tuple, check_patch_size, conv3d, up_conv3d
from bench.errors import ConfigError

NAME = "vnet"


def conv_prelu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (bias, "same") followed by PReLU with one slope per output channel."""
    return nn.Sequential(conv3d(c_in, c_out, kernel, stride), nn.PReLU(num_parameters=c_out))


def conv_stack(c_first: int, width: int, n: int, kernel: int) -> nn.Sequential:
    """``n`` x PReLU(Conv k^3): the first maps ``c_first -> width``, the rest ``width -> width``."""
    return nn.Sequential(*(conv_prelu(c_first if i == 0 else width, width, kernel) for i in range(n)))


class VNet(nn.Module):
    """V-Net with ``S = len(widths)`` stages; stage ``S-1`` is the bottom.

    Stage 0 projects the input to ``widths[0]`` channels with a 1x1x1 conv so the residual can be added.
    Down stage ``i`` starts with PReLU(2x2x2 stride-2 conv); each stage adds its input to the output of its
    ``convs[i]`` PReLU(k^3 conv) layers. Up stage ``i`` starts with PReLU(2x2x2 stride-2 transposed conv),
    concatenates the stage-``i`` encoder features, applies ``convs[i]`` PReLU(k^3 conv) layers and adds the
    upsampled input. A 1x1x1 conv gives logits.

    Args:
        in_channels: Input channels.
        num_classes: Output classes.
        widths: Feature maps per stage.
        convs: k^3 convs per stage (same length as ``widths``).
        kernel_size: Edge of the cubic kernels (V-Net: 5).

    Example:
        >>> net = VNet(widths=(8, 16, 32), convs=(1, 1, 1), kernel_size=3)
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 4, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        convs: Sequence[int] = (1, 2, 3, 3, 3),
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        in_channels = check_int(NAME, "in_channels", in_channels)
        num_classes = check_int(NAME, "num_classes", num_classes, minimum=2)
        w = check_int_tuple(NAME, "widths", widths)
        n = check_int_tuple(NAME, "convs", convs)
        k = check_int(NAME, "kernel_size", kernel_size)
        if len(w) != len(n):
            raise ConfigError(
                f"{NAME} widths={w} and convs={n} must have the same length (one entry per stage)"
            )
        self.stages = len(w)

        self.project = nn.Conv3d(in_channels, w[0], 1, bias=True)
        self.down = nn.ModuleList(
            [nn.Identity()] + [conv_prelu(w[i - 1], w[i], 2, stride=2) for i in range(1, self.stages)]
        )
        self.encoder = nn.ModuleList(conv_stack(w[i], w[i], n[i], k) for i in range(self.stages))
        levels = range(self.stages - 2, -1, -1)
        self.ups = nn.ModuleList(
            nn.Sequential(up_conv3d(w[i + 1], w[i], 2), nn.PReLU(num_parameters=w[i])) for i in levels
        )
        self.decoder = nn.ModuleList(conv_stack(2 * w[i], w[i], n[i], k) for i in levels)
        self.head = nn.Conv3d(w[0], num_classes, 1, bias=True)

    @property
    def divisor(self) -> int:
        """Patch sizes must be multiples of this along every axis."""
        return int(2 ** (self.stages - 1))

    def check_patch_size(self, patch_size: Sequence[int]) -> tuple[int, int, int]:
        """Raise ConfigError unless every axis of ``patch_size`` is divisible by ``2**(S-1)``."""
        why = f"{self.stages} stages halve it {self.stages - 1} times"
        return check_patch_size(NAME, patch_size, self.divisor, why)

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
