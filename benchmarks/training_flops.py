"""FLOPs per training patch of a torch network (from its convolution shapes) and the CPU's matmul peaks.

Counting (multiply-adds × 2, biases and element-wise ops left out, as ``torch.utils.flop_counter`` does):

- A ``Conv3d`` costs ``2·k³·c_in·c_out / groups`` per **output** voxel; a ``ConvTranspose3d`` the same per
  **input** voxel (each input voxel is spread over ``k³`` outputs: with kernel = stride = 2 that is
  ``2·c_in·c_out`` per output voxel, not ``2·8·c_in·c_out``).
- Backward costs the forward again for the weight gradient, and again for the gradient to the layer's input,
  except where that input needs no gradient: the first convolution's input is the image, so its backward is
  the weight gradient alone. A training step is therefore ``3·F - F_first``, not ``3·F``.

The peak is a ``size``² matmul in each dtype (float32, and bfloat16 where the CPU has it natively), with the
same thread count as the training figure it is compared with, best of the repeats (load only ever slows a
run down, so the fastest one is closest to what the machine can do).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import rounded, time_interleaved
from benchmarks.training_common import torch_threads

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of one patch through the network's convolutions (see the module docstring)."""

    forward: float
    weight_grad: float
    input_grad: float

    @property
    def backward(self) -> float:
        return self.weight_grad + self.input_grad

    @property
    def train(self) -> float:
        """Forward + backward: one training step's FLOPs per patch."""
        return self.forward + self.backward


def training_flops_per_patch(net: nn.Module, patch: Sequence[int], in_channels: int = 1) -> TrainingFlops:
    """Forward, weight-gradient and input-gradient FLOPs of every Conv3d / ConvTranspose3d for one patch.

    The forward runs with gradients on (the image needs none), so a layer's input needs a gradient exactly
    when autograd would compute one for it.
    """
    forward, weight_grad, input_grad = [0.0], [0.0], [0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv3d | nn.ConvTranspose3d)
        k = float(np.prod(module.kernel_size))
        per_voxel = 2.0 * k * module.in_channels * module.out_channels / module.groups
        voxels = output.shape[2:].numel() if isinstance(module, nn.Conv3d) else inputs[0].shape[2:].numel()
        flops = per_voxel * voxels
        forward[0] += flops
        if any(p.requires_grad for p in module.parameters()):
            weight_grad[0] += flops
        if inputs[0].requires_grad:
            input_grad[0] += flops

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    try:
        with torch.enable_grad():
            net.eval()(torch.zeros(1, in_channels, *patch))
    finally:
        for handle in handles:
            handle.remove()
    return TrainingFlops(forward[0], weight_grad[0], input_grad[0])


def conv_flops_per_patch(net: nn.Module, patch: Sequence[int], in_channels: int = 1) -> float:
    """Forward FLOPs of every Conv3d / ConvTranspose3d for one patch."""
    return training_flops_per_patch(net, patch, in_channels).forward


def matmul_peaks(threads: Sequence[int], *, size: int = 4096, repeats: int = 3,
                 dtypes: Sequence[str] = ("fp32", "bf16")) -> dict[str, Any]:
    """GFLOP/s of a ``size``² torch matmul per dtype and thread count: ``{"fp32_1t": ..., "bf16_1t": ...}``.

    Each dtype × thread count is timed ``repeats`` times (interleaved, after one warm-up call); the peak is
    the fastest call, the median is reported beside it. bf16 is timed only where the CPU has it natively
    (``bench.hardware``); elsewhere it is emulated and no peak.
    """
    from bench.hardware import cpu_has_native_bf16

    wanted = [d for d in dtypes if d != "bf16" or cpu_has_native_bf16()]
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.standard_normal((size, size), dtype=np.float32)) for _ in range(2))
    operands = {d: (a.to(DTYPES[d]), b.to(DTYPES[d])) for d in wanted}
    flops = 2.0 * size**3
    peaks: dict[str, Any] = {}
    medians: dict[str, Any] = {}
    for count in sorted(set(threads)):
        with torch_threads(count):
            timed = time_interleaved({d: functools.partial(torch.matmul, *operands[d]) for d in wanted},
                                     repeats=repeats, warmup=1)
        for d in wanted:
            peaks[f"{d}_{count}t"] = rounded(flops / min(timed.wall_all[d]) / 1e9)
            medians[f"{d}_{count}t"] = rounded(flops / timed.wall[d] / 1e9)
    return {"peak_gflops": peaks, "median_gflops": medians, "matmul_size": size, "repeats": repeats,
            "dtypes": wanted, "threads": sorted(set(threads))}


def cpu_peak_gflops(size: int = 4096, repeats: int = 3, threads: int = 1) -> dict[str, Any]:
    """``matmul_peaks`` at ``threads`` (the training figure's) and at all cores; headline: float32 at ``threads``.

    ``cpu_peak_gflops`` is the float32 peak at the training thread count (the figure an fp32 training
    GFLOP/s is compared with), ``cpu_peak_gflops_bf16`` the bfloat16 one (None without native bf16).
    """
    from adapters.torch.steps import available_cores

    cores = available_cores()
    peaks = matmul_peaks([threads or cores, cores], size=size, repeats=repeats)
    count = threads or cores
    return {
        "cpu_peak_gflops": peaks["peak_gflops"][f"fp32_{count}t"],
        "cpu_peak_gflops_bf16": peaks["peak_gflops"].get(f"bf16_{count}t"),
        "peak_threads": count,
        "cores": cores,
        **peaks,
    }


def peak_for(peak: dict[str, Any], dtype: str, threads: int) -> float | None:
    """The ``dtype`` matmul peak measured at ``threads`` threads (None when not measured)."""
    value = peak.get("peak_gflops", {}).get(f"{dtype}_{threads}t")
    return None if value is None else float(value)
