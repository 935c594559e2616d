"""No code runs from a model file, no unsafe deserialisation in the code, and the MLflow UI binds to
localhost unless told otherwise."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def test_torch_checkpoint_loading_runs_no_code(tmp_path: Path) -> None:
    """A weights.pt whose pickle runs a command when unpickled: frameworks.load refuses it (DataError naming the
    file) and the command never runs; the same file loaded with plain pickle does run it (so the file is
    really malicious and the test can fail)."""
    torch = pytest.importorskip("torch")
    from bench.errors import DataError
    from bench.training import frameworks

    checkpoint = tmp_path / "checkpoint"
    frameworks.build("unet3d", "torch", base_filters=2, depth=2).save(checkpoint)
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {sentinel}",)

    torch.save({"conv.weight": Payload()}, checkpoint / "weights.pt")
    with pytest.raises(DataError) as caught:
        frameworks.load(checkpoint)
    assert str(checkpoint / "weights.pt") in caught.value.message
    assert not sentinel.exists()

    torch.load(checkpoint / "weights.pt", weights_only=False)  # what an unsafe loader would do
    assert sentinel.exists()


def test_no_unsafe_deserialisation_in_the_code() -> None:
    root = Path(__file__).resolve().parent.parent
    sources = {p: p.read_text() for folder in ("bench", "adapters") for p in (root / folder).rglob("*.py")}
    for path, text in sources.items():
        assert "weights_only=False" not in text, path
        assert "allow_pickle=True" not in text, path
        assert "safe_mode=False" not in text, path
        assert "pickle.load" not in text, path
    assert "weights_only=True" in sources[root / "adapters" / "torch" / "segmenter.py"]


def test_make_ui_binds_to_localhost() -> None:
    """``make ui`` serves MLflow on 127.0.0.1 unless HOST is set (dry run: nothing is started)."""
    import re
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    dry = subprocess.run(["make", "-n", "ui"], cwd=root, env=env, capture_output=True, text=True, check=True).stdout
    command = next(line for line in dry.splitlines() if "mlflow ui" in line)
    host = re.search(r"--host\s+(\S+)", command)
    assert host is not None, command
    expand = ["bash", "-c", f'printf %s "{host.group(1)}"']
    assert subprocess.run(expand, env=env, capture_output=True, text=True).stdout == "127.0.0.1"
    assert subprocess.run(expand, env={**env, "HOST": "0.0.0.0"}, capture_output=True, text=True).stdout == "0.0.0.0"
