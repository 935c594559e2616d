"""One GPU per run (``bench.placement``, conf/hydra/launcher/): joblib workers claim distinct GPUs of a given device
list (real processes, real locks), ``n_jobs`` defaults to the GPU count, Ray asks ``num_gpus`` and SLURM
``gpus_per_task`` per run for ``profile.device=cuda``, and the GPU a Ray/SLURM task is given is the one its run
records. No GPU needed: the GPUs are an ``nvidia-smi`` listing given here."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench import hardware, placement
from bench.errors import ConfigError
from bench.sweeps import compose_config

FOUR_GPUS = "0,1,2,3"
SMI_FOUR = "\n".join(f"{i}, GPU-{i}aaa, NVIDIA H100 80GB HBM3, 81559, 570.86.15, 9.0" for i in range(4))


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose ``nvidia-smi`` lists four H100s, with ``CUDA_VISIBLE_DEVICES`` unset."""
    monkeypatch.setattr(hardware, "_smi_gpus", lambda: hardware.parse_smi(SMI_FOUR))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield


def test_joblib_workers_get_distinct_gpus_then_share_them_evenly() -> None:
    devices = FOUR_GPUS.split(",")
    assert [placement.gpu_for_worker(devices, w) for w in range(4)] == ["0", "1", "2", "3"]
    assert [placement.gpu_for_worker(devices, w) for w in range(4, 10)] == ["0", "1", "2", "3", "0", "1"]
    assert placement.gpu_for_worker(["2", "3"], 1) == "3"  # CUDA_VISIBLE_DEVICES=2,3: the indices themselves
    with pytest.raises(ConfigError, match="no GPU to assign"):
        placement.gpu_for_worker([], 0)


def test_n_jobs_defaults_to_the_gpu_count_when_runs_use_gpus() -> None:
    assert placement.joblib_jobs(FOUR_GPUS.split(","), "auto") == 4
    assert placement.joblib_jobs(FOUR_GPUS.split(","), "cuda") == 4
    assert placement.joblib_jobs(FOUR_GPUS.split(","), "cpu") == -1  # joblib's own default: one per CPU
    assert placement.joblib_jobs([], "auto") == -1


def _pin(lock_dir: str, barrier: multiprocessing.synchronize.Barrier, queue: multiprocessing.Queue) -> None:
    gpu = placement.pin_joblib_worker(FOUR_GPUS.split(","), "auto", 4, Path(lock_dir))
    again = placement.pin_joblib_worker(FOUR_GPUS.split(","), "auto", 4, Path(lock_dir))  # its next job
    queue.put((gpu, again, os.environ.get("CUDA_VISIBLE_DEVICES")))
    barrier.wait(timeout=60)  # every worker alive at once, as joblib's are


def test_concurrent_joblib_workers_pin_four_distinct_gpus(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_pin, args=(str(tmp_path / "slots"), barrier, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(gpu for gpu, _, _ in results) == ["0", "1", "2", "3"]
    assert all(gpu == again == visible for gpu, again, visible in results)  # kept for the worker's life


def test_a_freed_slot_is_claimed_again(tmp_path: Path) -> None:
    assert placement.claim_slot(tmp_path, 2) == 0
    assert placement.claim_slot(tmp_path, 2) == 0  # this process holds slot 0 already
    placement.release_slots()
    assert placement.claim_slot(tmp_path, 2) == 0
    placement.release_slots()


def test_nothing_is_pinned_for_cpu_runs_or_one_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert placement.pin_joblib_worker(FOUR_GPUS.split(","), "cpu", 4, tmp_path) is None
    assert placement.pin_joblib_worker(["3"], "auto", 4, tmp_path) is None  # Ray/SLURM narrowed it already
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and not list(tmp_path.iterdir())


@pytest.mark.parametrize(("launcher", "key", "cuda", "otherwise"), [
    ("ray", "hydra.launcher.ray.remote.num_gpus", 1, 0),
    ("submitit_slurm", "hydra.launcher.gpus_per_task", 1, None),
    ("submitit_local", "hydra.launcher.gpus_per_node", 1, 0),
])
def test_ray_and_slurm_ask_one_gpu_per_run_for_cuda(launcher: str, key: str, cuda: int, otherwise: int | None) -> None:
    def value(*overrides: str) -> object:
        return OmegaConf.select(compose_config([f"hydra/launcher={launcher}", *overrides], return_hydra_config=True),
                                key)

    assert value("profile.device=cuda") == cuda
    assert value("profile.device=auto") == otherwise == value("profile.device=cpu")
    assert value("profile.device=cuda", f"{key}=2") == 2  # a command-line value wins


def test_joblib_n_jobs_follows_the_visible_gpus(four_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def n_jobs(*overrides: str) -> object:
        cfg = compose_config(["hydra/launcher=joblib", *overrides], return_hydra_config=True)
        return OmegaConf.select(cfg, "hydra.launcher.n_jobs")

    assert n_jobs() == 4 and n_jobs("profile.device=cuda") == 4
    assert n_jobs("profile.device=cpu") == -1
    assert n_jobs("hydra.launcher.n_jobs=2") == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert n_jobs() == 2


def test_the_gpu_ray_or_slurm_gives_a_task_is_the_one_it_records(four_gpus: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # what Ray (num_gpus: 1) or SLURM (gpus_per_task: 1) sets
    assert [gpu.index for gpu in hardware.nvidia_gpus()] == ["2"]
    assert hardware.device_kind("auto") == "cuda"
    assert hardware.device_record("cuda") == {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_mb": "81559",
                                              "driver": "570.86.15"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # Ray's task with num_gpus: 0: no GPU, so auto trains on the CPU
    assert hardware.device_kind("auto") == "cpu"
