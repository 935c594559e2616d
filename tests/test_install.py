"""``make install DEVICE=cuda``: requirements/cuda.txt pins the CUDA builds of the frameworks at pyproject.toml's
versions, the CUDA install never pulls tensorflow-cpu, the Makefile picks the recipe by DEVICE, and (slow, needs
PyPI) pip resolves the whole CUDA set."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_pins() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pins", ROOT / "requirements" / "pins.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pins = load_pins()


def test_cuda_frameworks_are_pinned_at_the_cpu_versions() -> None:
    cpu = {pins.name_of(pin): pins.version_of(pin) for pin in pins.project_pins()}
    cuda = {pins.name_of(pin): pin for pin in pins.cuda_requirements()}
    assert set(cuda) == {"torch", "tensorflow"}
    assert pins.version_of(cuda["torch"]) == cpu["torch"]
    assert pins.version_of(cuda["tensorflow"]) == cpu["tensorflow-cpu"]
    assert cuda["torch"].startswith("torch===")  # exactly PyPI's (CUDA) wheel, never a local +cpu one
    assert cuda["tensorflow"].startswith("tensorflow[and-cuda]==")


def test_the_cuda_set_replaces_the_cpu_frameworks_and_keeps_every_other_pin() -> None:
    cuda_set = pins.cuda_pins()
    names = [pins.name_of(pin) for pin in cuda_set]
    assert "tensorflow-cpu" not in names and names.count("torch") == names.count("tensorflow") == 1
    others = [pin for pin in pins.project_pins() if pins.name_of(pin) not in ("torch", "tensorflow-cpu")]
    assert cuda_set[:len(others)] == others  # keras, h5py, monai, the dev and bench extras: unchanged
    assert pins.name_of("tensorflow[and-cuda]==2.21.0") == "tensorflow" and pins.name_of("Jinja2>=3") == "jinja2"


def make_dry_run(*args: str) -> str:
    done = subprocess.run(["make", "-n", "-B", "install", "PYTHON=python3", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_install_picks_the_recipe_by_device() -> None:
    cuda = make_dry_run("DEVICE=cuda")
    assert "requirements/pins.py conflicts cuda" in cuda and "requirements/pins.py cuda >" in cuda
    assert "pip install --quiet --no-deps -e ." in cuda and ".[dev,bench]" not in cuda
    assert "touch .venv/.installed-cuda" in cuda
    cpu = make_dry_run("DEVICE=cpu")
    assert "pip install --quiet -e '.[dev,bench]'" in cpu and "--no-deps" not in cpu
    assert "touch .venv/.installed\n" in cpu


def test_an_unknown_device_is_one_error_line(tmp_path: Path) -> None:
    done = subprocess.run(["make", "-B", "install", "DEVICE=gpu", "PYTHON=true", f"VENV={tmp_path}/venv"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "error: DEVICE=gpu is unknown (use DEVICE=cpu or DEVICE=cuda)" in done.stdout
    assert not (tmp_path / "venv").exists()


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not pypi_reachable(), reason="needs PyPI")
def test_pip_resolves_the_cuda_set_without_tensorflow_cpu(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements-cuda.txt"
    requirements.write_text("\n".join(pins.cuda_pins()) + "\n")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-r", str(requirements)], capture_output=True, text=True,
                          timeout=1200, check=False, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert resolved["torch"] == "2.13.0" and resolved["tensorflow"] == "2.21.0"
    assert "tensorflow-cpu" not in resolved
    assert any(name.startswith("nvidia-cudnn-cu12") for name in resolved)  # TensorFlow's CUDA 12 libraries
    assert any(name.startswith("nvidia-") and not name.endswith("-cu12") for name in resolved)  # torch's CUDA 13
