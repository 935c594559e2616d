"""Which numeric precisions the hardware runs natively, and what ``precision: auto`` means (no torch, no TF).

``TrainSpec.precision`` is one of ``PRECISIONS``: ``fp32``; ``bf16`` (autocast to bfloat16: torch
``torch.autocast``, Keras ``mixed_bfloat16``; weights, loss, softmax and metrics stay float32); ``fp16``
(float16 autocast with loss scaling, CUDA only); or ``auto``. A run's record must say what ran, so ``auto``
is resolved to one of the others when the config is translated (``bench.config``), before the run's hash and
params are made, and the adapter checks again against the device it actually trains on.

``auto`` is resolved as follows:

- **CPU** (``train.device=cpu``, or ``auto``/``cuda`` without an NVIDIA GPU): ``bf16`` when the CPU has
  native bfloat16 arithmetic (the ``avx512_bf16`` or ``amx_bf16`` flag in ``/proc/cpuinfo``) and the
  framework was measured faster in bf16 on such a CPU (``CPU_BF16_FASTER``), else ``fp32``. Without
  ``/proc/cpuinfo`` (not Linux) the flags are unknown and ``auto`` means ``fp32``.
- **CUDA** (``train.device=auto|cuda`` and ``nvidia-smi`` lists a GPU; bench never imports a framework to
  ask): ``bf16`` from compute capability 8.0 (Ampere) on, ``fp16`` from 7.0 (tensor cores, with loss
  scaling), else ``fp32``. The probe sees the GPU, not the framework build: if the framework then cannot use
  the GPU (a CPU-only wheel) it trains on the CPU, where the resolved precision must be native too or the
  adapter raises ``ConfigError`` (set ``train.device=cpu`` or ``profile.precision`` explicitly).

An explicit ``bf16`` or ``fp16`` is refused (``ConfigError``) where the device cannot run it natively:
bfloat16 emulated in software on a CPU without the flags is several times slower than float32 and would
make the record claim a speed-up that is not there. Nothing falls back silently.

Example:
    >>> resolve_precision("auto", framework="torch", device="cpu", native=("fp32", "bf16"))
    'bf16'
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""Every value of ``profile.precision`` / ``TrainSpec.precision``."""
DeviceKind = Literal["cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Every value of ``profile.device`` / ``TrainSpec.device``: ``auto`` (CUDA when a GPU is visible, else CPU)."""
CPUINFO = Path("/proc/cpuinfo")
"""Where the CPU's flags are read (tests point it at a fake file)."""
CPU_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
"""Either flag means native bfloat16 arithmetic (AVX-512 BF16 dot products, AMX tiles)."""
CPU_BF16_FASTER: dict[str, bool] = {"torch": True, "tf": True}
"""Frameworks that train faster in bf16 than in fp32 on a CPU with native bf16 (so ``auto`` picks bf16).

Measured on this project's 2-core Xeon (AVX-512 BF16 and AMX), 32³ patches, batch 8, 1 thread (``make bench``,
``benchmarks/training_precision.py``; README, Performance): U-Net base 16 training torch 28.2 -> 56.8 patches/s,
TF 26.5 -> 46.4; every quick-profile net 1.3-1.8× faster in both. A framework not listed (or False) keeps fp32
under ``auto``."""
SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Gpu:
    """An NVIDIA GPU as ``nvidia-smi`` reports it (``memory_mb``: total memory in MiB)."""

    name: str
    compute_capability: tuple[int, int]
    index: str = "0"
    uuid: str = ""
    memory_mb: int = 0
    driver: str = ""


SMI_QUERY = "index,uuid,name,memory.total,driver_version,compute_cap"
"""The ``nvidia-smi --query-gpu`` fields ``parse_smi`` reads, in this order."""


def cpu_flags(path: Path | None = None) -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (its first ``flags`` line); empty when it cannot be read."""
    source = CPUINFO if path is None else path
    return _read_flags(str(source))


@functools.lru_cache(maxsize=8)
def _read_flags(path: str) -> frozenset[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:  # not Linux, or no /proc
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):  # x86: flags; ARM: Features
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; else ``platform.processor()``), with whether it
    computes in bf16 natively: ``Intel(R) Xeon(R) Processor (bf16)``."""
    name = ""
    try:
        for line in Path(CPUINFO).read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("model name", "Model"):
                name = value.strip()
                break
    except OSError:
        pass
    import platform

    name = name or platform.processor() or platform.machine() or "unknown"
    return f"{name} (bf16)" if cpu_has_native_bf16() else name


def cpu_has_native_bf16(flags: Collection[str] | None = None) -> bool:
    """True when the CPU computes in bfloat16 natively (``avx512_bf16`` or ``amx_bf16``)."""
    found = cpu_flags() if flags is None else flags
    return any(flag in found for flag in CPU_BF16_FLAGS)


def cpu_native_precisions(flags: Collection[str] | None = None) -> tuple[str, ...]:
    """Precisions a CPU runs natively: ``fp32``, and ``bf16`` when the flags allow."""
    return ("fp32", "bf16") if cpu_has_native_bf16(flags) else ("fp32",)


def cuda_native_precisions(compute_capability: tuple[int, int]) -> tuple[str, ...]:
    """Precisions a CUDA GPU runs natively: ``fp16`` from 7.0 (tensor cores), ``bf16`` from 8.0."""
    native = ["fp32"]
    if compute_capability >= (7, 0):
        native.append("fp16")
    if compute_capability >= (8, 0):
        native.append("bf16")
    return tuple(native)


def parse_smi(text: str) -> tuple[Gpu, ...]:
    """The GPUs of ``nvidia-smi --query-gpu=SMI_QUERY --format=csv,noheader,nounits`` output (bad lines skipped)."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 6:
            continue
        index, uuid, name, memory, driver, capability = parts
        major, _, minor = capability.partition(".")
        if index.isdigit() and major.isdigit() and minor.isdigit():
            gpus.append(Gpu(name, (int(major), int(minor)), index, uuid,
                            int(memory) if memory.isdigit() else 0, driver))
    return tuple(gpus)


def visible_gpus(gpus: Sequence[Gpu], cuda_visible_devices: str | None) -> tuple[Gpu, ...]:
    """The GPUs a process sees under ``CUDA_VISIBLE_DEVICES`` (None: unset, all of them), in its order.

    Entries are indices or UUIDs (``GPU-…``, a prefix is enough); as in CUDA, the list ends at the first entry
    that names no GPU, so ``""`` and ``-1`` hide every GPU.
    """
    if cuda_visible_devices is None:
        return tuple(gpus)
    seen: list[Gpu] = []
    for entry in (part.strip() for part in cuda_visible_devices.split(",")):
        match = next((gpu for gpu in gpus if entry and (entry == gpu.index or (
            entry.startswith("GPU-") and gpu.uuid.startswith(entry)))), None)
        if match is None:
            break
        if match not in seen:
            seen.append(match)
    return tuple(seen)


@functools.lru_cache(maxsize=1)
def _smi_gpus() -> tuple[Gpu, ...]:
    """Every GPU ``nvidia-smi`` lists (it ignores ``CUDA_VISIBLE_DEVICES``); empty without a driver or GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        done = subprocess.run([smi, f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_smi(done.stdout) if done.returncode == 0 else ()


def nvidia_gpus() -> tuple[Gpu, ...]:
    """The NVIDIA GPUs this process may use: those ``nvidia-smi`` lists, as ``CUDA_VISIBLE_DEVICES`` narrows them
    (a launcher sets it per run: Ray, SLURM, ``bench.placement`` under joblib)."""
    return visible_gpus(_smi_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def nvidia_gpu() -> Gpu | None:
    """The GPU a framework uses first here (``nvidia_gpus()[0]``), or None (no driver, no GPU, none visible)."""
    gpus = nvidia_gpus()
    return gpus[0] if gpus else None


def device_kind(device: str) -> DeviceKind:
    """Where a run with ``train.device=device`` trains, as far as bench can tell without a framework."""
    if device == "cpu":
        return "cpu"
    return "cuda" if nvidia_gpu() is not None else "cpu"


def check_device(device: object, setting: str = "profile.device") -> str:
    """``device`` if it is one of ``DEVICES`` and this machine can honour it: ConfigError naming ``setting`` for
    an unknown value, and for ``cuda`` where no NVIDIA GPU is visible (before anything trains)."""
    if device not in DEVICES:
        raise ConfigError(f"{setting}={device!r} is unknown", fix=f"use one of {', '.join(DEVICES)}")
    if device == "cuda" and nvidia_gpu() is None:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU" if hidden is not None and _smi_gpus()
               else "nvidia-smi lists no GPU")
        raise ConfigError(f"{setting}=cuda but this machine has no usable NVIDIA GPU ({why})",
                          fix=f"use {setting}=auto or cpu, or run on a GPU machine with its driver installed")
    return str(device)


def device_record(kind: DeviceKind) -> dict[str, str]:
    """The device a run trains on, for its record: ``kind``, ``name``, and for a GPU ``memory_mb`` (total, MiB)
    and ``driver``; a CPU's name is its model (``cpu_model``). Not which of identical GPUs (runs of one
    configuration on GPU 0 and GPU 1 ran in the same environment)."""
    gpu = nvidia_gpu() if kind == "cuda" else None
    if gpu is None:
        return {"kind": "cpu", "name": cpu_model()}
    return {"kind": "cuda", "name": gpu.name, "memory_mb": str(gpu.memory_mb), "driver": gpu.driver}


def native_precisions(kind: DeviceKind) -> tuple[str, ...]:
    """Precisions this machine runs natively on ``kind`` (the GPU from ``nvidia-smi``, the CPU from its flags)."""
    gpu = nvidia_gpu() if kind == "cuda" else None
    return cuda_native_precisions(gpu.compute_capability) if gpu else cpu_native_precisions()


def resolve_precision(precision: str, *, framework: str, device: DeviceKind, native: Collection[str]) -> str:
    """The concrete precision (``fp32``, ``bf16`` or ``fp16``) a run trains in.

    Args:
        precision: One of ``PRECISIONS``.
        framework: ``torch``, ``tf`` (``auto`` on a CPU uses ``CPU_BF16_FASTER``).
        device: Where it trains.
        native: What that device runs natively (``cpu_native_precisions``, ``cuda_native_precisions``).

    Raises:
        ConfigError: An unknown value, or an explicit precision the device cannot run natively (naming the
            setting, the device and the fix).
    """
    check_precision_name(precision)
    if precision == "auto":
        if device == "cuda":
            return next((p for p in ("bf16", "fp16") if p in native), "fp32")
        return "bf16" if "bf16" in native and CPU_BF16_FASTER.get(framework, False) else "fp32"
    if precision not in native:
        if device == "cpu":
            why = ("fp16 runs on CUDA GPUs only" if precision == "fp16"
                   else "this CPU has no avx512_bf16 or amx_bf16 flag in /proc/cpuinfo (bf16 would be emulated)")
        else:
            why = f"this GPU's compute capability is below {'8.0' if precision == 'bf16' else '7.0'}"
        raise ConfigError(
            f"precision={precision!r} is not native here: {why}",
            fix=f"use precision auto or fp32 (this {device} runs {', '.join(native)} natively)",
        )
    return precision


def check_precision_name(precision: object, setting: str = "precision") -> str:
    """``precision`` if it is one of ``PRECISIONS``, else a ConfigError naming ``setting=<value>`` and the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{setting}={precision!r} is unknown", fix=f"use one of {', '.join(PRECISIONS)}")
    return str(precision)


def resolve_for_run(precision: str, *, framework: str, device: str) -> str:
    """``resolve_precision`` for a run about to be configured with ``train.device=device`` (bench.config)."""
    kind = device_kind(device)
    return resolve_precision(precision, framework=framework, device=kind, native=native_precisions(kind))


def worker_cpus() -> int:
    """CPU cores this worker was given, for ``profile.num_threads=0`` (never every core of a shared node).

    The smallest of the limits that apply: the CPUs a Ray task was assigned (Ray also sets
    ``OMP_NUM_THREADS`` to them), ``OMP_NUM_THREADS``, SLURM's ``SLURM_CPUS_PER_TASK``, and the process's
    CPU affinity (cgroups, ``taskset``, SLURM's binding). At least 1.
    """
    limits: list[int] = []
    try:
        limits.append(len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        limits.append(os.cpu_count() or 1)
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            limits.append(int(value))
    ray = sys.modules.get("ray")  # only a Ray worker has imported it; bench never imports it to ask
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        with contextlib.suppress(Exception):  # the driver, or a Ray without the runtime context API
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                limits.append(max(1, int(cpus)))
    return max(1, min(limits))
