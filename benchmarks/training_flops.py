"""FLOPs per training patch of a torch network (from its convolution shapes) and the CPU's matmul peak."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks import rounded, time_interleaved
from benchmarks.training_common import torch_threads


def conv_flops_per_patch(net: nn.Module, patch: Sequence[int], in_channels: int = 1) -> float:
    """Forward multiply-add FLOPs (×2) of every Conv3d / ConvTranspose3d for one patch."""
    total = [0.0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Conv3d | nn.ConvTranspose3d)
        k = float(np.prod(module.kernel_size))
        per_group = module.in_channels * module.out_channels / module.groups
        voxels = output.shape[2:].numel() if isinstance(module, nn.Conv3d) else inputs[0].shape[2:].numel()
        total[0] += 2.0 * k * per_group * voxels

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    try:
        with torch.inference_mode():
            net.eval()(torch.zeros(1, in_channels, *patch))
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def cpu_peak_gflops(size: int = 4096, repeats: int = 3) -> dict[str, Any]:
    """float32 matmul GFLOP/s of ``size``² matrices: torch (all threads, and 1 thread) and numpy.

    The peak is the best of the three: on a shared machine the all-core figure can come out lower.
    """
    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), dtype=np.float32), rng.standard_normal((size, size), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    from adapters.torch.steps import available_cores

    threads = available_cores()
    with torch_threads(1):
        one = time_interleaved({"torch_1": lambda: ta @ tb}, repeats=repeats, warmup=1).wall
    with torch_threads(threads):
        medians = time_interleaved({"torch": lambda: ta @ tb, "numpy": lambda: a @ b}, repeats=repeats,
                                   warmup=1).wall
    gflops = {k: flops / v / 1e9 for k, v in {**medians, **one}.items()}
    return {
        "cpu_peak_gflops": rounded(max(gflops.values())),
        "matmul_gflops_torch": rounded(gflops["torch"]),
        "matmul_gflops_numpy": rounded(gflops["numpy"]),
        "matmul_gflops_torch_1_thread": rounded(gflops["torch_1"]),
        "matmul_size": size,
        "torch_threads": threads,
    }
