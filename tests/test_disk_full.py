"""A full disk during a run: the run ends FAILED with one line naming the path and "no space left", leaves no
half-written outputs, the store still opens, and running again after space is freed finishes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bad_input import assert_fails_cleanly, run_call
from conftest import Workspace, mlflow_runs, temp_files

SITE_HOOK = '''
import errno
import bench.io as io

_write_volume = io.write_volume

def write_volume(volume, path):
    if "predictions" in str(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _write_volume(volume, path)

io.write_volume = write_volume
'''


def test_a_full_disk_fails_the_run_with_one_line_and_a_rerun_finishes(
    cohort_copy: Path, workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITE_HOOK)  # ENOSPC when the first prediction is written
    clean_env = dict(workspace.env)
    workspace.env = {**clean_env, "PYTHONPATH": f"{hook}:{clean_env['PYTHONPATH']}"}
    call = run_call(workspace, cohort_copy, mentions=("no space left on the device", "predictions"), started=True)
    assert_fails_cleanly(call, workspace, tmp_path, capsys, monkeypatch)

    workspace.env = clean_env  # space freed: the same command finishes the run
    done = workspace.bench_run(call.argv, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    statuses = sorted(r.info.status for r in workspace.runs_())
    assert statuses == ["FAILED", "FINISHED"]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Path:
    """A real 24 KiB tmpfs (needs the right to mount: root, or skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_outputs_on_a_real_full_tmpfs(small_tmpfs: Path, cohort_copy: Path, workspace: Workspace) -> None:
    args = workspace.overrides(cohort_copy, "+experiment=table1/row5", f"paths.outputs={small_tmpfs / 'outputs'}")
    done = workspace.bench_run(args, timeout=600)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert "no space left on the device" in errors[0] and str(small_tmpfs) in errors[0]
    assert "Traceback" not in done.stderr
    assert not list((small_tmpfs / "outputs").rglob("*.*")), "a failed run left outputs"
    assert temp_files(small_tmpfs) == []
    assert [r.info.status for r in mlflow_runs(workspace.uri)] == ["FAILED"]  # the store still opens
