"""Interrupted and parallel sweeps (issue 5).

* A smoke sweep killed with SIGKILL in the middle of its second configuration and started again: the
  finished configuration is skipped (same MLflow run), the interrupted one is redone, MLflow ends with one
  FINISHED run per configuration and the killed run KILLED (never RUNNING), nothing half-written is left or
  trusted, and ``bench report`` counts each configuration once.
* A run, or a joblib sweep's driver, stopped by SIGTERM (``kill``, ``scancel``, a scheduler's time limit) in
  the middle of training: one ``error:`` line, no traceback, exit code 143, the MLflow runs KILLED at once
  (not left RUNNING for the next start to find), no outputs left.
* Two joblib workers against the default sqlite store (created by both at once) finish without
  "database is locked" errors, every run FINISHED.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import Workspace, kill_group, temp_files

from bench.cli import main as bench_main

# Cheap settings for the mechanism under test: one training subject, one test subject, no overlap.
CHEAP = (
    "data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}",
    "inference.overlap=0",
    "profile.num_threads=1",
)


def statuses(runs: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """Table row -> [(status, run id)] of the child runs, oldest first."""
    out: dict[str, list[tuple[str, str]]] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        out.setdefault(run.data.tags.get("table_row", ""), []).append((run.info.status, run.info.run_id))
    return out


def wait_for(process: Any, ws: Workspace, ready: Any, timeout_s: float, log: Path) -> list[Any]:
    """Poll the MLflow store until ``ready(runs)``; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = ws.runs_()
        if ready(runs):
            return runs
        if process.poll() is not None:
            pytest.fail(f"sweep ended (code {process.returncode}) before the expected state:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.2)
    kill_group(process)
    pytest.fail(f"timed out waiting for the sweep:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("launcher", ["one run", "joblib sweep"])
def test_sigterm_ends_the_runs_killed(launcher: str, tiny_cohort: Path, workspace: Workspace) -> None:
    long = (*CHEAP, "profile.epochs=100000")
    if launcher == "one run":  # SLURM's scancel or time limit, `kill`: the run's own process ends its run
        args = workspace.overrides(tiny_cohort, "+experiment=table1/row5", *long)
        why = {"stopped by SIGTERM"}
    else:  # joblib SIGKILLs its workers when the driver stops: the driver ends their runs
        args = workspace.overrides(tiny_cohort, "+sweep=table1", "+experiment/table1=row5,row7", *long,
                                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
        why = {"the sweep was stopped, and its worker process with it"}
    log = workspace.root / "stopped.log"
    process = workspace.popen_bench_run(args, multirun=launcher != "one run", log=log)
    expected = 1 if launcher == "one run" else 2

    def training(runs: list[Any]) -> bool:
        return sum(r.info.status == "RUNNING" and "val_loss" in r.data.metrics for r in runs) == expected

    wait_for(process, workspace, training, 600, log)
    os.kill(process.pid, signal.SIGTERM)
    try:
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        kill_group(process)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: stopped by SIGTERM; run the same command again"), errors
    runs = workspace.runs_()
    assert [r.info.status for r in runs] == ["KILLED"] * expected  # at once, not left for the next start
    assert {r.data.tags["brainbench.error"] for r in runs} == why
    assert temp_files(workspace.runs) == [], "temporary files or unfinished outputs were left behind"
    assert list((workspace.runs / "outputs").glob("*/*")) == []


def test_sigkilled_sweep_resumes(tiny_cohort: Path, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    args = workspace.overrides(tiny_cohort, "+sweep=table1", "+experiment/table1=row5,row7", *CHEAP)
    log = workspace.root / "first.log"
    process = workspace.popen_bench_run(args, multirun=True, log=log)

    def second_running(runs: list[Any]) -> bool:
        states = sorted(r.info.status for r in runs)
        return states == ["FINISHED", "RUNNING"]

    wait_for(process, workspace, second_running, 600, log)
    kill_group(process)  # the second configuration started (its run exists) and has not finished

    killed = statuses(workspace.runs_())
    assert [s for s, _ in killed["5"]] == ["FINISHED"]
    assert [s for s, _ in killed["7"]] == ["RUNNING"]  # left behind by the killed process
    finished_id, killed_id = killed["5"][0][1], killed["7"][0][1]
    outputs = workspace.runs / "outputs"
    complete = [p for p in outputs.glob("*/*") if not p.name.startswith(".")]
    assert all((p / "summary.json").is_file() for p in complete), "an unfinished run looks complete"
    for entry in (workspace.runs / "cache").rglob("*.npz"):  # every cache entry under its final name is whole
        with np.load(entry, allow_pickle=False) as data:
            assert data["image"].ndim == 3

    again = workspace.bench_run(args, multirun=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping row5" in again.stdout + again.stderr

    final = statuses(workspace.runs_())
    assert final["5"] == [("FINISHED", finished_id)]  # skipped: not run again
    assert [s for s, _ in final["7"]] == ["KILLED", "FINISHED"]  # redone; the killed one is marked
    assert final["7"][0][1] == killed_id
    runs = workspace.runs_()
    hashes = Counter(r.data.tags["brainbench.config_hash"] for r in runs if r.info.status == "FINISHED")
    assert sorted(hashes.values()) == [1, 1]
    killed_run = next(r for r in runs if r.info.run_id == killed_id)
    assert killed_run.data.tags["brainbench.error"] == "process died while running"
    assert temp_files(workspace.runs) == [], "temporary files or unfinished outputs were left behind"
    assert sorted(p.name.split("-")[0] for p in outputs.glob("*/*")) == ["row5", "row7"]

    capsys.readouterr()
    assert bench_main(["report", "--runs-dir", str(workspace.runs)]) == 0
    table1 = pd.read_csv(workspace.runs / "reports" / "table1-synthetic-smoke" / "table1.csv")
    assert sorted(table1["row"]) == [5, 7]
    assert list(table1["seeds"]) == [1, 1] and list(table1["subjects"]) == [1, 1]


def test_two_joblib_workers_on_the_default_sqlite_store(tiny_cohort: Path, workspace: Workspace) -> None:
    """Rows 5 and 7 × a patch that fits and one that does not: 4 jobs on 2 workers. The two good ones
    FINISH, the two bad ones end FAILED (not RUNNING) with one ``error:`` line each and exit code 2; no
    "database is locked" anywhere, although both workers also create the store at once."""
    (workspace.runs / "mlflow.db").unlink()  # both workers create the default store at once
    env = {k: v for k, v in workspace.env.items() if k != "MLFLOW_TRACKING_URI"}
    # The patch axis first, so that Hydra launches both good jobs first: each job now imports its framework for
    # the dry forward pass before its run opens, so a bad job no longer fails faster than a good one trains.
    args = workspace.overrides(tiny_cohort, "profile.patch_size=[16,16,16],[64,64,64]",
                               "+experiment=table1/row5,table1/row7", "hydra/launcher=joblib",
                               "hydra.launcher.n_jobs=2", *CHEAP)
    done = workspace.bench_run(args, multirun=True, env=env, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "locked" not in output.lower() and "Traceback" not in output, output[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("profile.patch_size=[64, 64, 64]" in e for e in errors), done.stderr
    assert (workspace.runs / "mlflow.db").is_file()
    runs = workspace.runs_()
    assert sorted((r.data.tags["table_row"], r.data.params["sampling.patch_size"], r.info.status) for r in runs) == [
        ("5", "[16, 16, 16]", "FINISHED"), ("5", "[64, 64, 64]", "FAILED"),
        ("7", "[16, 16, 16]", "FINISHED"), ("7", "[64, 64, 64]", "FAILED")]
    good = sorted((r.info.start_time, r.info.end_time) for r in runs if r.info.status == "FINISHED")
    assert good[1][0] < good[0][1], "the two good configurations did not run at the same time"


def _open_tracker(root: str, barrier: Any, results: Any) -> None:
    from bench.tracking.runs import Tracker

    barrier.wait()
    try:
        tracker = Tracker("race", None, Path(root))
        tracker.parent_run("race")
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {str(exc)[:300]}")


def test_workers_creating_the_store_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three processes open a not-yet-existing default sqlite store at the same moment (MLflow creates and
    migrates the schema when a client opens it; unguarded this fails with "table ... already exists")."""
    import bench.tracking.runs  # noqa: F401 - import mlflow once, before forking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    context = multiprocessing.get_context("fork")
    for attempt in range(1):
        root = tmp_path / f"runs{attempt}"
        barrier, results = context.Barrier(3), context.Queue()
        workers = [context.Process(target=_open_tracker, args=(str(root), barrier, results)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert [results.get(timeout=5) for _ in workers] == ["ok"] * 3
        assert [w.exitcode for w in workers] == [0, 0, 0]
