"""Layers the PyTorch networks share.

Every network maps ``float32[B, C, X, Y, Z]`` to logits ``[B, K, X, Y, Z]``, has ``bias=True`` on every
convolution and "same" padding everywhere. Strided convolutions pad like TensorFlow's ``padding="same"``
(the extra voxel, if any, goes after), so the torch and TF networks compute the same function.
Weights use PyTorch's default initialisation (Kaiming-uniform with ``a=sqrt(5)`` for convolutions, biases
uniform in ``±1/sqrt(fan_in)``; norms start at scale 1, shift 0; PReLU slopes at 0.25).

The networks live in ``adapters.torch.nets``; their arguments are checked once, in ``adapters.configs``.
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.configs import ILN_RHO_INIT


def conv3d(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
    """Conv3d with bias and TensorFlow-style "same" padding.

    With stride 1 this is ``padding="same"``. With stride ``s`` on sizes divisible by ``s`` TF pads
    ``max(kernel - s, 0)`` voxels per axis, the odd one after; an asymmetric pad is a ConstantPad3d.
    """
    if stride == 1:
        return nn.Conv3d(c_in, c_out, kernel, padding="same", bias=True)
    total = max(kernel - stride, 0)
    before, after = total // 2, total - total // 2
    if before == after:
        return nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=before, bias=True)
    pad = nn.ConstantPad3d((before, after) * 3, 0.0)
    return nn.Sequential(pad, nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=0, bias=True))


def up_conv3d(c_in: int, c_out: int, factor: int) -> nn.ConvTranspose3d:
    """Transposed conv with kernel = stride = ``factor`` (multiplies every spatial size by ``factor``)."""
    return nn.ConvTranspose3d(c_in, c_out, factor, stride=factor, bias=True)


class InstanceLayerNorm3d(nn.Module):
    """Instance-layer normalisation (ILN; Zhou et al. 2019, after U-GAT-IT), the norm the paper's row 9 cites.

    ``y = weight * (rho * IN(x) + (1 - rho) * LN(x)) + bias`` per channel: IN standardises each channel over
    the patch, LN each sample over channels and patch together (so, unlike IN, it keeps how strongly each
    channel responds relative to the others, e.g. the intensity level the first convolution sees).
    ``rho`` is learned and clipped to [0, 1] in the forward pass. Statistics are float32 under autocast.
    3 trainable parameters per channel; the Keras twin is ``adapters.tf.layers.InstanceLayerNormalization``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.rho = nn.Parameter(torch.full((channels,), ILN_RHO_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        var_in, mean_in = torch.var_mean(x, dim=(2, 3, 4), unbiased=False, keepdim=True)  # [B, C, 1, 1, 1]
        per_channel = (1, -1, 1, 1, 1)
        scale, shift = _iln_scale_shift(mean_in, var_in, self.weight.view(per_channel), self.bias.view(per_channel),
                                        self.rho.view(per_channel), self.eps)
        return x * scale + shift


def _iln_scale_shift(mean_in: torch.Tensor, var_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     rho: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ILN as ``x * scale + shift`` from the per-channel statistics (one pass over ``x`` instead of three).

    The layer statistics follow from the instance ones (all channels have the same voxel count): their mean
    is the channels' mean and their variance the mean of ``var_c + mean_c**2`` minus the squared mean.
    """
    mean_ln = mean_in.mean(dim=1, keepdim=True)
    var_ln = (var_in + mean_in.square()).mean(dim=1, keepdim=True) - mean_ln.square()
    inv_in, inv_ln = torch.rsqrt(var_in + eps), torch.rsqrt(var_ln.clamp_min(0.0) + eps)
    rho = rho.clamp(0.0, 1.0)
    scale = weight * (rho * inv_in + (1.0 - rho) * inv_ln)
    return scale, bias - weight * (rho * mean_in * inv_in + (1.0 - rho) * mean_ln * inv_ln)


def make_norm(norm: str, channels: int) -> nn.Module:
    """``none`` -> Identity; ``batch`` -> BatchNorm3d; ``instance`` -> InstanceNorm3d with scale and shift;
    ``instance_layer`` -> InstanceLayerNorm3d.

    Batch and instance norm have 2 trainable parameters per channel (Keras: BatchNormalization(epsilon=1e-5,
    momentum=0.9) / GroupNormalization(groups=channels, epsilon=1e-5)), instance-layer norm 3.
    """
    if norm == "batch":
        return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, eps=1e-5, affine=True, track_running_stats=False)
    if norm == "instance_layer":
        return InstanceLayerNorm3d(channels)
    return nn.Identity()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
