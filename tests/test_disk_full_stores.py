"""A full store during a run (issue 39, part 5): the sqlite store (SQLITE_FULL injected from the first metric on,
and a real small tmpfs holding ``paths.runs``) and a tracking server's artifact store (ENOSPC injected into the
real server, and a real small tmpfs under it that fills up mid-run). The run ends with one ``error:`` line naming
the store and "no space left", leaves no outputs or ``.partial`` (nor a staged upload on the server), the store
still opens, and the same command after space is freed finishes only what is missing. A run that cannot mark
itself FAILED in a full sqlite store is marked KILLED when the next run starts.

The server answers an upload its artifact store cannot hold with a bare HTTP 500 (``Internal Server Error``,
text/plain: the ENOSPC is only in its log) and closes the connection, so MLflow's client ends with "too many 500
error responses" or, when it retried on that connection, "Connection aborted": both name the upload's URL."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Workspace, mlflow_runs, temp_files
from mlflow.exceptions import MlflowException
from stack_helpers import assert_stack_gone, require_postgres, stack_dir, stack_ports

from bench import stack
from bench.tracking.calls import store_full_error

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
import importlib.machinery
import os
import sys

# Patched when the server imports it, not here: importing mlflow in every interpreter's startup (uvicorn's spawned
# workers too) makes a worker miss uvicorn's 5 s health check, so it is killed and respawned over and over.
TARGET = "mlflow.store.artifact.local_artifact_repo"


def _patch(module):
    publish = module.LocalArtifactRepository._publish_staged_artifact

    def full(self, temp_file_path, destination_file_path, finalize_temp_path=None):
        # as a write of the staged file fails on a full disk; the caller removes the staged file
        if os.path.exists(os.environ["BENCH_TEST_FULL_FLAG"]):
            raise OSError(errno.ENOSPC, "No space left on device", temp_file_path)
        return publish(self, temp_file_path, destination_file_path, finalize_temp_path)

    module.LocalArtifactRepository._publish_staged_artifact = full


class _PatchOnImport:
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                _patch(module)

            spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
'''


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _hooked(workspace: Workspace, tmp_path: Path, hook: str) -> dict[str, str]:
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(hook)
    return {**workspace.env, "PYTHONPATH": f"{folder}:{workspace.env['PYTHONPATH']}"}


UPLOAD = "http://127.0.0.1:5001/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/checkpoint/model.pt"


@pytest.mark.parametrize("text", [
    f"API request to {UPLOAD} failed with exception HTTPConnectionPool(host='127.0.0.1', port=5001): Max retries "
    f"exceeded with url: /api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/checkpoint/model.pt (Caused by "
    "ResponseError('too many 500 error responses'))",
    f"500 Server Error: Internal Server Error for url: {UPLOAD}",
    # what the real server gives: a 500, then the connection closed, so the retry (or the rest of the body) is reset
    f"API request to {UPLOAD} failed with exception HTTPConnectionPool(host='127.0.0.1', port=5001): Max retries "
    f"exceeded with url: /api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/checkpoint/model.pt (Caused by "
    "ProtocolError('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer')))",
])
def test_a_failed_upload_to_a_server_names_its_artifact_store(text: str) -> None:
    for where in ("http://127.0.0.1:5001", None):
        error = store_full_error(MlflowException(text), where)
        assert error is not None
        assert error.message.startswith("http://127.0.0.1:5001 (artifact store): the server could not store "
                                        "1/abc/artifacts/checkpoint/model.pt: HTTP 500"), error.message
        assert "no space left on the device" in error.message


def test_a_store_full_names_the_store_a_uri_with_both_slashes_and_no_password() -> None:
    pg = store_full_error(MlflowException('(psycopg.errors.DiskFull) could not extend file "base/16384/2619": '
                                          "No space left on device"), "postgresql+psycopg://mlflow:pw@127.0.0.1:5433/mlflow")
    assert pg is not None and pg.message.startswith("postgresql+psycopg://127.0.0.1:5433/mlflow: no space left on "
                                                    "the device ("), pg.message
    lite = store_full_error(MlflowException("(sqlite3.OperationalError) database or disk is full"),
                            "sqlite:////data/runs/mlflow.db?timeout=30")
    assert lite is not None and lite.message.startswith("/data/runs/mlflow.db: no space left on the device ("), lite.message
    refused = f"API request to {UPLOAD.replace('mlflow-artifacts/artifacts', 'mlflow/runs')} failed with exception " \
              "(Caused by ProtocolError('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer')))"
    assert store_full_error(MlflowException(refused), "http://127.0.0.1:5001") is None  # not an upload


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


@pytest.mark.slow  # the injected SQLITE_FULL test above covers the same path in make test
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


def _full_artifact_store_on_a_server(workspace: Workspace, tiny_cohort: Path, root: Path,
                                     free_space: Callable[[], None]) -> None:
    """Start PostgreSQL and the MLflow server in ``root`` (its artifact store, ``root/artifacts``, full), run row
    7 against it: one error line naming the artifact store, no outputs or staged files left, the server still
    serves; ``free_space()``, then the same command finishes."""
    ports = stack_ports()
    pids: dict[str, int | None] = {}
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
        assert errors[0].startswith(f"error: {uri} (artifact store): the server could not store "), errors
        assert "HTTP 500" in errors[0] and "no space left on the device" in errors[0], errors
        assert "Traceback" not in done.stderr
        assert not list((workspace.runs / "outputs").rglob("*.*")), "a failed run left outputs"
        assert temp_files(workspace.root) == [] and temp_files(root / "artifacts") == []  # no staged upload left
        runs = mlflow_runs(uri)  # the server still serves
        assert [r.info.status for r in runs] == ["FAILED"]
        assert runs[0].data.tags["brainbench.error"] == errors[0].removeprefix("error: ")
        assert "No space left on device" in (root / "mlflow.log").read_text(errors="replace")

        free_space()
        again = workspace.bench_run(args, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert sorted(r.info.status for r in mlflow_runs(uri)) == ["FAILED", "FINISHED"]
    finally:
        stack.down(root)
    assert_stack_gone(root, pids)


@pytest.mark.slow
def test_a_full_artifact_store_on_the_server_fails_the_run_and_the_server_still_serves(
        tiny_cohort: Path, workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected into the server's artifact store (no mount rights needed): every upload fails."""
    require_postgres()
    flag = tmp_path / "artifact-store-full"
    flag.touch()
    hook = tmp_path / "server-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(ARTIFACTS_FULL_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook))  # the server the stack starts inherits it
    monkeypatch.setenv("BENCH_TEST_FULL_FLAG", str(flag))
    with stack_dir() as root:
        _full_artifact_store_on_a_server(workspace, tiny_cohort, root, flag.unlink)


@pytest.mark.slow
def test_a_real_full_tmpfs_artifact_store_on_the_server(tiny_cohort: Path, workspace: Workspace) -> None:
    """The server's artifact store on a real 96 KiB tmpfs (needs the right to mount: root, or skipped): the run's
    first artifacts (the metrics table, summary, history, its plot, the predictions: about 84 KiB in pages) fit
    and its checkpoint does not, so the store fills up mid-run; grown to 256 MiB, the same command finishes."""
    require_postgres()
    with stack_dir() as root:
        store = root / "artifacts"
        store.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(store)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")

        def grow() -> None:
            stored = [p for p in store.rglob("*") if p.is_file()]
            assert stored, "the store filled up before the run's first artifact: not mid-run"
            assert subprocess.run(["mount", "-o", "remount,size=256m", str(store)], check=False).returncode == 0

        try:
            _full_artifact_store_on_a_server(workspace, tiny_cohort, root, grow)
        finally:
            subprocess.run(["umount", "-l", str(store)], check=False)
