"""Layers the PyTorch networks share.

Every network maps ``float32[B, C, X, Y, Z]`` to logits ``[B, K, X, Y, Z]``, has ``bias=True`` on every
convolution and "same" padding everywhere. Strided convolutions pad like TensorFlow's ``padding="same"``
(the extra voxel, if any, goes after), so the torch and TF networks compute the same function.
Weights use PyTorch's default initialisation (Kaiming-uniform with ``a=sqrt(5)`` for convolutions, biases
uniform in ``±1/sqrt(fan_in)``; norms start at scale 1, shift 0; PReLU slopes at 0.25).

The networks live in ``adapters.torch.nets``; their arguments are checked once, in ``bench.networks.configs``.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.networks.configs import ILN_RHO_INIT


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
        return _InstanceLayerNormFunction.apply(x.float(), self.weight, self.bias, self.rho, self.eps)


class _InstanceLayerNormFunction(torch.autograd.Function):
    """ILN forward and a fused backward: a few passes over the tensor instead of autograd's many.

    Forward: per-channel moments, then ``x * scale + shift`` (one pass). Backward: the gradient reaches
    the small per-(sample, channel) graph of ``_iln_scale_shift`` only through ``sum(g)`` (d/d shift) and
    ``sum(g * x)`` (d/d scale); autograd differentiates that small graph, and ``dx = g * scale + x * a + c``
    with ``a = 2 dvar / n`` and ``c = dmean / n - a * mean`` (the chain rule through the moments) is one
    more pass. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,  # type: ignore[override]
                rho: torch.Tensor, eps: float) -> torch.Tensor:
        mean_in, var_in = _instance_moments(x, eps)
        scale, shift = _iln_scale_shift(mean_in, var_in, weight, bias, rho, eps)
        ctx.save_for_backward(x, mean_in, var_in, weight, bias, rho)
        ctx.eps = eps
        return torch.addcmul(shift, x, scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, mean_in, var_in, weight, bias, rho = ctx.saved_tensors
        sum_g = grad.sum(dim=(2, 3, 4), keepdim=True)
        sum_gx = (grad * x).sum(dim=(2, 3, 4), keepdim=True)
        with torch.enable_grad():
            small = [t.detach().requires_grad_() for t in (mean_in, var_in, weight, bias, rho)]
            scale, shift = _iln_scale_shift(small[0], small[1], small[2], small[3], small[4], ctx.eps)
            d_mean, d_var, d_weight, d_bias, d_rho = torch.autograd.grad((scale, shift), small, (sum_gx, sum_g))
        voxels = x[0, 0].numel()
        slope = d_var * (2.0 / voxels)
        offset = d_mean / voxels - slope * mean_in
        grad_x = torch.addcmul(offset, x, slope).addcmul_(grad, scale.detach())
        return grad_x, d_weight, d_bias, d_rho, None


def _instance_moments(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and biased variance of ``x [B, C, X, Y, Z]``, each ``[B, C, 1, 1, 1]``.

    Batch norm's kernel on one sample at a time: ~6x faster than ``torch.var_mean`` over the spatial axes on
    1 CPU thread, in both memory formats (the training loop's activations are channels-last).
    """
    means, variances = [], []
    for sample in x.split(1):
        _, mean, inv_std = torch.native_batch_norm(sample, None, None, None, None, True, 0.0, eps)
        means.append(mean)
        variances.append(inv_std.pow(-2) - eps)
    shape = (x.shape[0], x.shape[1], 1, 1, 1)
    return torch.stack(means).view(shape), torch.stack(variances).clamp_min(0.0).view(shape)


def _iln_scale_shift(mean_in: torch.Tensor, var_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     rho: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ILN as ``x * scale + shift`` from the per-channel statistics (one pass over ``x`` instead of three).

    ``mean_in``, ``var_in``: ``[B, C, 1, 1, 1]``; ``weight``, ``bias``, ``rho``: ``[C]``. The layer statistics follow from the instance ones (all channels have the same voxel count): their mean
    is the channels' mean and their variance the mean of ``var_c + mean_c**2`` minus the squared mean.
    """
    per_channel = (1, -1, 1, 1, 1)
    weight, bias, rho = weight.view(per_channel), bias.view(per_channel), rho.view(per_channel).clamp(0.0, 1.0)
    mean_ln = mean_in.mean(dim=1, keepdim=True)
    var_ln = (var_in + mean_in.square()).mean(dim=1, keepdim=True) - mean_ln.square()
    inv_in, inv_ln = torch.rsqrt(var_in + eps), torch.rsqrt(var_ln.clamp_min(0.0) + eps)
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
