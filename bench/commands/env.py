"""``bench env``: what this machine offers a run: Python, brainbench, the CPU, the GPUs ``nvidia-smi`` lists, where
``profile.device`` would train, and for each framework its version, build, devices, native precisions and threads."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

import bench
from bench import hardware
from bench.networks.registry import FRAMEWORKS

LIBRARY = {"torch": "torch", "tf": "tensorflow"}
"""The library each framework name stands for."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "env",
        help="print Python, the frameworks, the devices they see, native precisions and threads",
        description="Print what a run here would use: Python and brainbench versions; the CPU (model, cores this "
        "process may use, native precisions); the NVIDIA GPUs nvidia-smi lists (name, memory, driver, compute "
        "capability; as CUDA_VISIBLE_DEVICES narrows them); where profile.device=auto trains; and for each "
        "framework its version, build (CUDA or CPU only), the devices it sees with their native precisions, and "
        "its thread counts in this process. A framework that cannot be imported is reported, not an error.",
    )
    parser.add_argument("--framework", choices=FRAMEWORKS, action="append",
                        help="probe only this framework (repeatable; default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def collect(frameworks: tuple[str, ...] = FRAMEWORKS) -> dict[str, Any]:
    """Everything ``bench env`` prints, as plain values (frameworks are imported here, through the adapters)."""
    from bench.training.frameworks import environment

    gpus = hardware.nvidia_gpus()
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "brainbench": bench.__version__,
        "cpu": {"model": hardware.cpu_model(), "cores": os.cpu_count() or 1, "worker_cpus": hardware.worker_cpus(),
                "native": list(hardware.cpu_native_precisions())},
        "gpus": [{"index": gpu.index, "name": gpu.name, "memory_mb": gpu.memory_mb, "driver": gpu.driver,
                  "compute_capability": ".".join(map(str, gpu.compute_capability)),
                  "native": list(hardware.cuda_native_precisions(gpu.compute_capability))} for gpu in gpus],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_auto": hardware.device_kind("auto"),
        "frameworks": {name: environment(name) for name in frameworks},
    }


def render(info: dict[str, Any]) -> list[str]:
    """``collect``'s result as aligned text lines."""
    cpu = info["cpu"]
    lines = [f"{'python':<12}{info['python']['version']} ({info['python']['executable']})",
             f"{'brainbench':<12}{info['brainbench']}",
             f"{'cpu':<12}{cpu['model']}: {cpu['cores']} cores, {cpu['worker_cpus']} for this process; "
             f"native {', '.join(cpu['native'])}"]
    hidden = info["cuda_visible_devices"]
    narrowed = f" (CUDA_VISIBLE_DEVICES={hidden})" if hidden is not None else ""
    if not info["gpus"]:
        lines.append(f"{'gpus':<12}none visible{narrowed} (nvidia-smi)")
    for gpu in info["gpus"]:
        lines.append(f"{'gpu ' + gpu['index']:<12}{gpu['name']}, {gpu['memory_mb']} MiB, driver {gpu['driver']}, "
                     f"compute {gpu['compute_capability']}: native {', '.join(gpu['native'])}{narrowed}")
    lines.append(f"{'device':<12}profile.device=auto trains on {info['device_auto']}")
    for key, framework in info["frameworks"].items():
        name = LIBRARY.get(key, key)
        if "error" in framework:
            lines.append(f"{name:<12}{framework['error']}")
            continue
        keras = f", keras {framework['keras']}" if "keras" in framework else ""
        lines.append(f"{name:<12}{framework['version']} ({framework['build']}){keras}")
        for device in framework["devices"]:
            memory = f", {device['memory_mb']} MiB" if "memory_mb" in device else ""
            lines.append(f"{'':<2}{device['name']:<10}{device['model']}{memory}: native {', '.join(device['native'])}")
        if "memory_growth" in framework:
            lines.append(f"{'':<2}{'memory':<10}TF_FORCE_GPU_ALLOW_GROWTH={framework['memory_growth'] or '(unset)'} "
                         "(true: taken as needed, so runs can share a GPU)")
        threads = framework["threads"]
        lines.append(f"{'':<2}{'threads':<10}{threads['intra_op']} intra-op, {threads['inter_op']} inter-op "
                     "(0: the framework's default; a run sets profile.num_threads)")
    return lines


def run(args: argparse.Namespace) -> int:
    info = collect(tuple(dict.fromkeys(args.framework or FRAMEWORKS)))
    print(json.dumps(info, indent=2) if args.json else "\n".join(render(info)), flush=True)
    return 0
