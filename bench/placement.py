"""One GPU per run, whichever launcher runs it (no framework, no Hydra: pure rules and one lock file per slot).

- **joblib** (one machine): its workers are processes the sweep reuses, so each worker claims a slot (the
  lowest free one of ``n_jobs``, by an OS lock it holds until it exits) and keeps the GPU of that slot
  (``gpu_for_worker``) for its life: ``CUDA_VISIBLE_DEVICES`` is set before a framework starts. With ``n_jobs``
  up to the number of GPUs every worker has its own; with more, workers share GPUs evenly. ``n_jobs`` defaults
  to the number of GPUs (``joblib_jobs``, conf/hydra/launcher/joblib.yaml).
- **Ray** and **SLURM**: the scheduler gives each run its GPU and sets ``CUDA_VISIBLE_DEVICES`` itself; the
  launcher only asks for it (``gpus_per_run``: ``num_gpus`` / ``gpus_per_task``), when ``profile.device=cuda``.

Example:
    >>> [gpu_for_worker(["0", "1", "2", "3"], worker) for worker in range(6)]
    ['0', '1', '2', '3', '0', '1']
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench.errors import ConfigError

CLAIM_TIMEOUT_S = 60.0
"""How long a worker waits for a free slot (a worker that just exited releases its lock at once)."""
_held: dict[str, tuple[int, IO[str]]] = {}
"""The slot this process holds per lock folder, with its open lock file (kept open: closing it frees the slot)."""


def gpus_per_run(device: str, off: Any = 0) -> Any:
    """GPUs a Ray or SLURM launcher asks for per run: 1 for ``profile.device=cuda``, else ``off`` (0, or null
    for SLURM's ``gpus_per_task``): the driver cannot tell whether the workers' nodes have GPUs."""
    return 1 if device == "cuda" else off


def joblib_jobs(devices: Sequence[str], device: str) -> int:
    """joblib's ``n_jobs`` when the command line does not set it: one worker per GPU when the runs use GPUs
    (``device`` auto or cuda and some GPU visible), else -1 (joblib: one per CPU)."""
    return len(devices) if devices and device != "cpu" else -1


def gpu_for_worker(devices: Sequence[str], worker: int) -> str:
    """The GPU (an entry of ``devices``, e.g. a ``CUDA_VISIBLE_DEVICES`` index) of worker slot ``worker``:
    distinct for the first ``len(devices)`` workers, then shared round-robin."""
    if not devices:
        raise ConfigError("no GPU to assign a worker to", fix="use profile.device=cpu, or run on a GPU machine")
    if worker < 0:
        raise ValueError(f"worker slot {worker} must be >= 0")
    return str(devices[worker % len(devices)])


def claim_slot(lock_dir: Path, slots: int, timeout_s: float = CLAIM_TIMEOUT_S) -> int:
    """The lowest of ``slots`` worker slots that no other live process holds, held by this process until it
    exits (an ``flock`` on ``lock_dir/slot-<i>.lock``); the same slot again when this process already holds one."""
    key = str(Path(lock_dir).resolve())
    if key in _held:
        return _held[key][0]
    if slots < 1:
        raise ValueError(f"slots={slots} must be >= 1")
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for slot in range(slots):
            handle = open(Path(lock_dir) / f"slot-{slot}.lock", "a")  # noqa: SIM115 (held for the process's life)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _held[key] = (slot, handle)
            return slot
        if time.monotonic() > deadline:
            raise ConfigError(f"all {slots} worker slots in {lock_dir} are held by other processes",
                              fix="wait for the other sweep's workers to finish, or set hydra.launcher.n_jobs")
        time.sleep(0.2)


def release_slots() -> None:
    """Give back every slot this process holds (a worker exiting does it anyway)."""
    for _, handle in _held.values():
        with contextlib.suppress(OSError):
            handle.close()
    _held.clear()


def pin_joblib_worker(devices: Sequence[str], device: str, n_jobs: int, lock_dir: Path) -> str | None:
    """Make this joblib worker use one GPU: claim a slot and set ``CUDA_VISIBLE_DEVICES`` to its GPU; the GPU, or
    None when nothing is to be pinned (``device=cpu``, or at most one GPU visible)."""
    if device == "cpu" or len(devices) < 2:
        return None
    slots = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
    gpu = gpu_for_worker(devices, claim_slot(lock_dir, slots))
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu
