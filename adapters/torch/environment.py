"""What PyTorch sees on this machine, for ``bench env`` (``bench.training.frameworks.environment('torch')``)."""

from __future__ import annotations

from typing import Any

import torch

from bench import hardware


def describe() -> dict[str, Any]:
    """torch's version, build (``CUDA 13.0`` or ``CPU only``), the devices it can train on with the precisions
    each runs natively (``bench.hardware``'s rule), and its default thread counts in this process."""
    devices: list[dict[str, Any]] = [{"name": "cpu", "model": hardware.cpu_model(),
                                      "native": list(hardware.cpu_native_precisions())}]
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        capability = (int(properties.major), int(properties.minor))
        devices.append({"name": f"cuda:{index}", "model": properties.name,
                        "memory_mb": int(properties.total_memory // 2**20),
                        "native": list(hardware.cuda_native_precisions(capability))})
    cuda = torch.version.cuda
    return {"version": torch.__version__, "build": f"CUDA {cuda}" if cuda else "CPU only", "devices": devices,
            "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}}
