"""``bench.hardware``'s GPU probe and device rules, from given ``nvidia-smi`` output (no GPU needed): the listing
parsed, ``CUDA_VISIBLE_DEVICES`` applied as CUDA does, ``profile.device`` checked, and the device a run records."""

from __future__ import annotations

import pytest

from bench import hardware
from bench.errors import ConfigError

SMI = """0, GPU-5d1e0c3a-aaaa, NVIDIA H200, 143771, 570.124.06, 9.0
1, GPU-77f2b1c0-bbbb, NVIDIA H200, 143771, 570.124.06, 9.0
2, GPU-0c9e44d2-cccc, Tesla V100-SXM2-16GB, 16384, 570.124.06, 7.0
[N/A] garbage line
"""
GPUS = hardware.parse_smi(SMI)


def test_nvidia_smi_listing_is_parsed() -> None:
    assert [(g.index, g.name, g.memory_mb, g.driver, g.compute_capability) for g in GPUS] == [
        ("0", "NVIDIA H200", 143771, "570.124.06", (9, 0)),
        ("1", "NVIDIA H200", 143771, "570.124.06", (9, 0)),
        ("2", "Tesla V100-SXM2-16GB", 16384, "570.124.06", (7, 0)),
    ]
    assert GPUS[2].uuid == "GPU-0c9e44d2-cccc"
    assert hardware.parse_smi("") == ()


@pytest.mark.parametrize(("visible", "indices"), [
    (None, ["0", "1", "2"]),        # unset: every GPU
    ("2,0", ["2", "0"]),            # CUDA's order: the framework's cuda:0 is GPU 2
    ("GPU-77f2", ["1"]),            # a UUID prefix
    ("0,7,1", ["0"]),               # the list ends at the first entry that names no GPU
    ("", []), ("-1", []),           # every GPU hidden
])
def test_cuda_visible_devices_narrows_the_gpus_as_cuda_does(visible: str | None, indices: list[str]) -> None:
    assert [gpu.index for gpu in hardware.visible_gpus(GPUS, visible)] == indices


def test_device_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_smi_gpus", lambda: ())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=r"profile\.device=cuda but this machine has no usable NVIDIA GPU "
                                          r"\(nvidia-smi lists no GPU\) \(use profile\.device=auto or cpu"):
        hardware.check_device("cuda")
    assert hardware.check_device("auto") == "auto" and hardware.check_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=r"profile\.device='gpu' is unknown \(use one of auto, cpu, cuda\)"):
        hardware.check_device("gpu")


def test_hidden_gpus_are_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_smi_gpus", lambda: GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES='' hides every GPU"):
        hardware.check_device("cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert hardware.check_device("cuda") == "cuda"


def test_the_device_record_names_the_gpu_or_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_smi_gpus", lambda: GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert hardware.device_kind("auto") == "cuda" and hardware.device_kind("cpu") == "cpu"
    assert hardware.device_record("cuda") == {"kind": "cuda", "name": "Tesla V100-SXM2-16GB", "memory_mb": "16384",
                                              "driver": "570.124.06"}
    assert hardware.device_record("cpu") == {"kind": "cpu", "name": hardware.cpu_model()}
    assert hardware.native_precisions("cuda") == ("fp32", "fp16")  # the V100 this process sees, not GPU 0
