"""Sweeps on a real Ray head logging to a real PostgreSQL-backed MLflow server (issue 14); slow.

* End to end: ``bench.stack.up`` (PostgreSQL, MLflow server, Ray head with 2 CPUs), a smoke sweep of 3 Table 1
  rows on Ray (2 workers at once) logging to the server, ``bench report`` from the server equal to the same
  sweep run with joblib on sqlite (same Dice per run, same Table 1), ``down``, no stray processes.
* A Ray worker SIGKILLed mid-run: the sweep ends with one ``error:`` line and exit 2, the other runs FINISHED,
  running the sweep again marks the killed run KILLED and redoes it alone.
* The MLflow server restarted mid-sweep: the runs wait for it (bounded retries) and finish, nothing twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Workspace, kill_group, mlflow_runs
from stack_helpers import assert_stack_gone, require_postgres, stack_dir, stack_ports

from bench import stack
from bench.cli import main as bench_main

pytestmark = pytest.mark.slow
ROWS = "+experiment/table1=row5,row6,row7"
CHEAP = ("data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}", "inference.overlap=0")
DICE = ("metrics.test_dice_CSF", "metrics.test_dice_GM", "metrics.test_dice_WM")


def ray_args(ws: Workspace, data: Path, ports: stack.StackPorts, experiment: str, *extra: str) -> list[str]:
    return ws.overrides(data, "+sweep=table1", ROWS, "hydra/launcher=ray",
                        f"hydra.launcher.ray.init.address={ports.ray_address}", f"tracking.uri={ports.tracking_uri}",
                        f"tracking.experiment={experiment}", f"tracking.sweep={experiment}", *CHEAP, *extra)


def server_env(ws: Workspace) -> dict[str, str]:
    return {k: v for k, v in ws.env.items() if k != "MLFLOW_TRACKING_URI"}  # workers get the URI from config


def by_row(runs: list[Any]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        out.setdefault(run.data.tags["table_row"], []).append((run.info.status, run.info.run_id))
    return out


def experiment_runs(uri: str, name: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(name)
    return [] if found is None else [r for r in mlflow_runs(uri) if r.info.experiment_id == found.experiment_id]


def frame(runs: list[Any]) -> pd.DataFrame:
    rows = [{"hash": r.data.tags["brainbench.config_hash"], "row": r.data.tags["table_row"],
             **{k: r.data.metrics[k.split(".", 1)[1]] for k in DICE}} for r in runs if r.info.status == "FINISHED"]
    return pd.DataFrame(rows).sort_values("row").reset_index(drop=True)


def test_ray_sweep_on_the_stack_equals_joblib_on_sqlite(tiny_cohort: Path, workspace: Workspace,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    require_postgres()
    ports = stack_ports(ray_cpus=2)
    with stack_dir() as root:
        t0 = time.perf_counter()
        try:
            stack.up(root, ports)
            startup_s = time.perf_counter() - t0
            pids = stack.status(root)
            assert all(pids.values()), pids
            t1 = time.perf_counter()
            on_ray = workspace.bench_run(ray_args(workspace, tiny_cohort, ports, "e2e"), multirun=True,
                                         env=server_env(workspace), timeout=900)
            ray_s = time.perf_counter() - t1
            assert on_ray.returncode == 0, on_ray.stdout[-3000:] + on_ray.stderr[-3000:]
            server_runs = experiment_runs(ports.tracking_uri, "e2e")
            capsys.readouterr()
            assert bench_main(["report", "--tracking-uri", ports.tracking_uri, "--experiment", "e2e",
                               "--out", str(workspace.root / "server_reports")]) == 0
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)

    t2 = time.perf_counter()
    args = workspace.overrides(tiny_cohort, "+sweep=table1", ROWS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                               "tracking.experiment=e2e", "tracking.sweep=e2e", *CHEAP)
    on_joblib = workspace.bench_run(args, multirun=True, timeout=900)
    joblib_s = time.perf_counter() - t2
    assert on_joblib.returncode == 0, on_joblib.stderr[-3000:]
    assert bench_main(["report", "--runs-dir", str(workspace.runs), "--experiment", "e2e",
                       "--out", str(workspace.root / "sqlite_reports")]) == 0
    print(f"\nstack start-up {startup_s:.1f} s; 3-row smoke sweep: Ray (2 workers) {ray_s:.1f} s, "
          f"joblib (2 jobs) {joblib_s:.1f} s")

    assert sorted(r.info.status for r in server_runs) == ["FINISHED"] * 3
    assert len({r.data.tags["brainbench.pid"] for r in server_runs}) == 3  # a fresh worker process per run
    assert {r.data.params["train.num_threads"] for r in server_runs} == {"1"}  # Ray gave each run 1 CPU
    pd.testing.assert_frame_equal(frame(server_runs), frame(workspace.runs_()), rtol=0, atol=1e-6)
    from_server = pd.read_csv(workspace.root / "server_reports" / "table1.csv")
    from_sqlite = pd.read_csv(workspace.root / "sqlite_reports" / "table1.csv")
    assert sorted(from_server["row"]) == [5, 6, 7]
    pd.testing.assert_frame_equal(from_server, from_sqlite)


@pytest.fixture(scope="module")
def ray_stack() -> Iterator[tuple[Path, stack.StackPorts]]:
    require_postgres()
    ports = stack_ports(ray_cpus=2)
    with stack_dir() as root:
        try:
            stack.up(root, ports)
            pids = stack.status(root)
            yield root, ports
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)


def wait_until(ready: Any, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 600) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"sweep ended (code {process.returncode}) too early:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    kill_group(process)
    pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")


def test_a_sigkilled_ray_worker_is_redone_alone(tiny_cohort: Path, workspace: Workspace,
                                                ray_stack: tuple[Path, stack.StackPorts]) -> None:
    _, ports = ray_stack
    args = ray_args(workspace, tiny_cohort, ports, "kill")
    log = workspace.root / "kill.log"
    process = workspace.popen_bench_run(args, multirun=True, log=log, env=server_env(workspace))

    def row7_running() -> Any:  # job #2 starts when one of the 2 CPUs frees up
        return next((r for r in experiment_runs(ports.tracking_uri, "kill")
                     if r.data.tags.get("table_row") == "7" and r.info.status == "RUNNING"), None)

    victim = wait_until(row7_running, process, log)
    os.kill(int(victim.data.tags["brainbench.pid"]), signal.SIGKILL)  # the Ray worker process running row 7
    assert process.wait(timeout=600) == 2, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Ray worker died" in errors[0], log.read_text()[-3000:]
    first = by_row(experiment_runs(ports.tracking_uri, "kill"))
    assert [s for s, _ in first["5"]] == ["FINISHED"] and [s for s, _ in first["6"]] == ["FINISHED"]
    assert first["7"] == [("RUNNING", victim.info.run_id)]  # left by the dead worker, never FINISHED

    again = workspace.bench_run(args, multirun=True, env=server_env(workspace), timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    final = by_row(experiment_runs(ports.tracking_uri, "kill"))
    assert final["5"] == first["5"] and final["6"] == first["6"]  # skipped, not redone
    assert [s for s, _ in final["7"]] == ["KILLED", "FINISHED"] and final["7"][0][1] == victim.info.run_id


def test_the_server_restarted_mid_sweep_loses_and_doubles_nothing(tiny_cohort: Path, workspace: Workspace,
                                                                  ray_stack: tuple[Path, stack.StackPorts]) -> None:
    root, ports = ray_stack
    args = ray_args(workspace, tiny_cohort, ports, "restart")
    log = workspace.root / "restart.log"
    process = workspace.popen_bench_run(args, multirun=True, log=log, env=server_env(workspace))
    wait_until(lambda: len(experiment_runs(ports.tracking_uri, "restart")) >= 2, process, log)
    assert stack.stop(root, "mlflow")
    time.sleep(3)  # runs now meet a closed port and retry
    stack.start_mlflow(root, ports)
    assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
    runs = experiment_runs(ports.tracking_uri, "restart")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3, [(r.info.status, r.data.tags) for r in runs]
    assert sorted(Counter(r.data.tags["brainbench.config_hash"] for r in runs).values()) == [1, 1, 1]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ports.tracking_uri)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert steps == sorted(set(steps)) and len(steps) == int(run.data.params["train.epochs"]), steps
        assert len(client.get_metric_history(run.info.run_id, "test_dice_CSF")) == 1
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "metrics.csv", "checkpoint", "predictions"} <= names, names
