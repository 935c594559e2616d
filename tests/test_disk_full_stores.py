"""A full store during a run (issue 39, part 5): the sqlite store (SQLITE_FULL injected from the first metric on,
and a real small tmpfs holding ``paths.runs``) and a tracking server's artifact store
(ENOSPC injected into the real server). The run ends with one ``error:`` line naming the store and "no space
left", leaves no outputs or ``.partial``, the store still opens, and the same command after space is freed
finishes only what is missing. A run that cannot mark itself FAILED in a full sqlite store is marked KILLED
when the next run starts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Workspace, mlflow_runs, temp_files
from stack_helpers import assert_stack_gone, require_postgres, stack_dir, stack_ports

from bench import stack

CHEAP = ("data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}", "inference.overlap=0")

SQLITE_FULL_HOOK = '''
import sqlite3

import sqlalchemy
from sqlalchemy import event

_full = []

@event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def _store_full(conn, cursor, statement, parameters, context, executemany):
    # from the first metric on, every write fails as sqlite fails on a full disk (SQLITE_FULL); reads still work
    if conn.dialect.name != "sqlite":
        return
    verb = statement.lstrip().split(" ", 1)[0].upper()
    if verb == "INSERT" and " metrics " in statement.lower():
        _full.append(True)
    if _full and verb in ("INSERT", "UPDATE", "DELETE"):
        raise sqlite3.OperationalError("database or disk is full")
'''

ARTIFACTS_FULL_HOOK = '''
import errno
import os

from mlflow.store.artifact import local_artifact_repo

_log_artifact = local_artifact_repo.LocalArtifactRepository.log_artifact

def log_artifact(self, local_file, artifact_path=None):
    if os.path.exists(os.environ["BENCH_TEST_FULL_FLAG"]):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.artifact_dir, artifact_path or ""))
    return _log_artifact(self, local_file, artifact_path)

local_artifact_repo.LocalArtifactRepository.log_artifact = log_artifact
'''


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _hooked(workspace: Workspace, tmp_path: Path, hook: str) -> dict[str, str]:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(hook)
    return {**workspace.env, "PYTHONPATH": f"{folder}:{workspace.env['PYTHONPATH']}"}


def test_a_full_sqlite_store_fails_the_run_with_one_line_and_a_rerun_finishes(
        cohort_copy: Path, workspace: Workspace, tmp_path: Path) -> None:
    args = workspace.overrides(cohort_copy, "+experiment=table1/row5")
    done = workspace.bench_run(args, env=_hooked(workspace, tmp_path, SQLITE_FULL_HOOK))
    errors = _errors(done.stderr)
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    store = workspace.runs / "mlflow.db"
    assert "no space left on the device" in errors[0] and str(store) in errors[0], errors
    assert "Traceback" not in done.stderr
    assert not list((workspace.runs / "outputs").rglob("*.*")), "a failed run left outputs"
    assert temp_files(workspace.root) == []
    first = workspace.runs_()  # the store still opens
    assert [r.info.status for r in first] == ["RUNNING"]  # it cannot even mark itself FAILED
    assert "one left RUNNING is marked KILLED" in errors[0]  # what happens next, said in the line

    again = workspace.bench_run(args)  # space freed: the same command
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = {r.info.run_id: r.info.status for r in workspace.runs_()}
    assert statuses[first[0].info.run_id] == "KILLED"  # reaped when the next run started
    assert sorted(statuses.values()).count("FINISHED") == 1 and len(statuses) == 2
    assert workspace.bench_run(args).returncode == 0  # and nothing is redone
    assert len(workspace.runs_()) == 2


@pytest.fixture
def small_runs_tmpfs(tmp_path: Path, workspace: Workspace) -> Iterator[Path]:
    """``paths.runs`` (store, artifacts, outputs) on a real tmpfs holding the workspace's empty store and 64 KiB
    more (needs the right to mount: root, or skipped)."""
    mount = tmp_path / "small"
    mount.mkdir()
    size_kib = (workspace.runs / "mlflow.db").stat().st_size // 1024 + 64  # the store and 64 KiB to spare
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")
    (mount / "mlflow.db").write_bytes((workspace.runs / "mlflow.db").read_bytes())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_tmpfs_under_the_runs_folder(small_runs_tmpfs: Path, cohort_copy: Path,
                                                 workspace: Workspace) -> None:
    uri = f"sqlite:///{small_runs_tmpfs / 'mlflow.db'}?timeout=30"
    env = {**workspace.env, "MLFLOW_TRACKING_URI": uri}
    args = [a for a in workspace.overrides(cohort_copy, "+experiment=table1/row5")
            if not a.startswith(("paths.runs=", "paths.outputs="))]
    args += [f"paths.runs={small_runs_tmpfs}", f"paths.outputs={small_runs_tmpfs / 'outputs'}"]
    done = workspace.bench_run(args, env=env)
    errors = _errors(done.stderr)
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert "no space left on the device" in errors[0] and str(small_runs_tmpfs) in errors[0], errors
    assert "Traceback" not in done.stderr
    assert not list((small_runs_tmpfs / "outputs").rglob("*.*")), "a failed run left outputs"
    assert temp_files(small_runs_tmpfs) == []
    assert [r.info.status for r in mlflow_runs(uri)] in (["FAILED"], ["RUNNING"])  # the store still opens

    grown = subprocess.run(["mount", "-o", "remount,size=256m", str(small_runs_tmpfs)], check=False)
    assert grown.returncode == 0
    again = workspace.bench_run(args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = sorted(r.info.status for r in mlflow_runs(uri))
    assert statuses in (["FAILED", "FINISHED"], ["FINISHED", "KILLED"]), statuses  # KILLED: reaped at the rerun


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 39, open: the MLflow server with the ENOSPC injection did not become "
                   "ready within 120 s, and uploads go through log_artifact_from_stream, which the injection misses")
def test_a_full_artifact_store_on_the_server_fails_the_run_and_the_server_still_serves(
        tiny_cohort: Path, workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_postgres()
    flag = tmp_path / "artifact-store-full"
    flag.touch()
    hook = tmp_path / "server-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ARTIFACTS_FULL_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook))  # the server the stack starts inherits it
    monkeypatch.setenv("BENCH_TEST_FULL_FLAG", str(flag))
    ports = stack_ports()
    with stack_dir() as root:
        try:
            stack.up(root, ports, ("postgres", "mlflow"))
            pids = stack.status(root)
            uri = ports.tracking_uri
            env = {**{k: v for k, v in workspace.env.items() if k != "MLFLOW_TRACKING_URI"},
                   "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
            args = workspace.overrides(tiny_cohort, "+experiment=table1/row7", f"tracking.uri={uri}",
                                       "tracking.experiment=full-artifacts", *CHEAP)
            done = workspace.bench_run(args, env=env)
            errors = _errors(done.stderr)
            assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
            assert f"{uri} (artifact store)" in errors[0] and "no space left" in errors[0], errors
            assert "HTTP 500" in errors[0] and "Traceback" not in done.stderr
            assert not list((workspace.runs / "outputs").rglob("*.*")), "a failed run left outputs"
            assert temp_files(workspace.root) == []
            runs = mlflow_runs(uri)  # the server still serves
            assert [r.info.status for r in runs] == ["FAILED"]
            assert runs[0].data.tags["brainbench.error"] == errors[0].removeprefix("error: ")
            assert "No space left on device" in (root / "mlflow.log").read_text(errors="replace")

            flag.unlink()  # space freed
            again = workspace.bench_run(args, env=env)
            assert again.returncode == 0, again.stderr[-3000:]
            assert sorted(r.info.status for r in mlflow_runs(uri)) == ["FAILED", "FINISHED"]
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)
