"""``bench env`` (bench/commands/env.py): Python, each framework's version, the devices it sees with their native
precisions, and its threads, probed through the adapters; a framework that cannot be imported is reported."""

from __future__ import annotations

import json
import platform
import sys

import pytest
import torch

from bench import hardware
from bench.cli import main as bench_main


def test_env_reports_python_torch_its_devices_precisions_and_threads(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["env", "--framework", "torch", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["python"] == {"version": platform.python_version(), "executable": sys.executable}
    assert list(info["frameworks"]) == ["torch"]
    described = info["frameworks"]["torch"]
    assert described["version"] == torch.__version__
    assert described["build"] == (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only")
    assert described["devices"][0] == {"name": "cpu", "model": hardware.cpu_model(),
                                       "native": list(hardware.cpu_native_precisions())}
    assert len(described["devices"]) == 1 + torch.cuda.device_count()
    assert described["threads"] == {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    assert [gpu["index"] for gpu in info["gpus"]] == [gpu.index for gpu in hardware.nvidia_gpus()]
    assert info["device_auto"] == hardware.device_kind("auto")


def test_env_text_names_both_frameworks(capsys: pytest.CaptureFixture[str]) -> None:
    import tensorflow as tf

    assert bench_main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"python      {platform.python_version()} (")
    assert any(line.startswith(f"torch       {torch.__version__} (") for line in lines)
    assert any(line.startswith(f"tensorflow  {tf.__version__} (") and "keras" in line for line in lines)
    assert any(line.startswith("  /CPU:0    ") and "native fp32" in line for line in lines)
    assert "  memory    TF_FORCE_GPU_ALLOW_GROWTH=true (true: taken as needed, so runs can share a GPU)" in lines
    assert any(line.startswith("device      profile.device=auto trains on ") for line in lines)


def test_env_says_when_a_framework_cannot_be_imported(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "adapters.tf" or name.startswith("adapters.tf.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as on a machine without TensorFlow
    assert bench_main(["env", "--framework", "tf"]) == 0
    out = capsys.readouterr().out
    assert "tensorflow  cannot be imported (ModuleNotFoundError: import of tensorflow halted" in out
