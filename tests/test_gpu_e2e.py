"""benchmarks/gpu_e2e.sh (issue 38): its CPU dry run, its plan and its nvidia-smi sampling (with a stand-in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package: import it from the checkout
    sys.path.insert(0, str(REPO))

from benchmarks import gpu_e2e  # noqa: E402


def test_dry_run_detects_plans_and_steps_on_the_cpu() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([str(REPO / "benchmarks" / "gpu_e2e.sh"), "--dry-run", "--budget-min", "5"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dry_run"] is True and "one torch step on the CPU" in result["cpu_step"]
    assert "lacks: torch sees no CUDA device" in done.stdout
    names = [job["name"] for job in result["jobs"]]
    assert "smoke row 1 (atlas)" in names and "full row 5 torch" in names and "full row 9 torch" in names
    assert all(f"smoke row {row} torch" in names for row in range(2, 10))
    statuses = [job["status"] for job in result["jobs"]]
    assert statuses[0].startswith("would run") and statuses[-1] == "would skip: budget"  # 5 min do not hold it all


def test_plan_follows_the_frameworks_found() -> None:
    names = [job.name for job in gpu_e2e.plan(["tf"], 2, sitk=False)]
    assert names[:8] == [f"smoke row {row} tf" for row in range(2, 10)]
    assert "full row 5 tf" in names and "full row 3 tf, speed probe" in names
    assert not any("deterministic" in n or "torch" in n for n in names)  # TF cannot switch determinism off
    assert gpu_e2e.plan([], 2, sitk=True)[0].name == "smoke row 1 (atlas)" and len(gpu_e2e.plan([], 2, True)) == 1


def test_gpu_busy_averages_what_nvidia_smi_prints(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nfor v in 20 60 100; do echo $v; done\nsleep 30\n")
    fake.chmod(0o755)
    with gpu_e2e.GpuBusy(str(fake), index="0") as busy:
        for _ in range(100):
            if len(busy.samples) == 3:
                break
            __import__("time").sleep(0.05)
    assert busy.share == pytest.approx(0.6)
    with gpu_e2e.GpuBusy(None) as none:
        pass
    assert none.share is None
