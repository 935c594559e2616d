"""Tracking on a real MLflow server backed by a real PostgreSQL (issue 14), in the fast suite.

One stack (PostgreSQL + ``mlflow server``, no Ray) serves the module. A smoke run logs to it with
``tracking.uri=http://...`` and its artifacts go through the server (nothing under ``runs/artifacts``); running it
again skips it; ``bench report --tracking-uri`` rebuilds Table 1 with the run's Dice. A worker that dies
leaves a RUNNING run that the next start marks KILLED; three workers racing for the same experiment, parent and
configuration without a file lock make one of each. An unreachable server is one ``error:`` line and exit 2
for a run, a sweep and a report. Also: ``profile.num_threads=0`` is the worker's CPUs, and the launcher
configs compose.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, Workspace, mlflow_runs
from stack_helpers import assert_stack_gone, free_ports, require_postgres, stack_dir, stack_ports

from bench import stack
from bench.cli import main as bench_main

CHEAP = ("data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}", "inference.overlap=0")


@pytest.fixture(scope="module")
def running_stack() -> Iterator[stack.StackPorts]:
    """PostgreSQL and a MLflow server on it, on 127.0.0.1 for this module; stopped (and checked gone) after it."""
    require_postgres()
    ports = stack_ports()
    with stack_dir() as root:
        try:
            stack.up(root, ports, ("postgres", "mlflow"))
            pids = stack.status(root)
            yield ports
        finally:
            stack.down(root)
        assert_stack_gone(root, pids)


@pytest.fixture(scope="module")
def server(running_stack: stack.StackPorts) -> str:
    """The module's MLflow server URI."""
    return running_stack.tracking_uri


def test_the_uri_check_accepts_a_live_database_and_a_live_server(running_stack: stack.StackPorts) -> None:
    from bench.tracking.runs import experiment_names
    from bench.tracking.store import check_store_uri

    check_store_uri(running_stack.database_uri)  # a real connection to the stack's PostgreSQL
    check_store_uri(running_stack.tracking_uri)
    assert isinstance(experiment_names(running_stack.database_uri), list)  # MLflow opens the same store


def test_the_database_has_room_for_every_server_pool(running_stack: stack.StackPorts) -> None:
    import psycopg

    per_engine = sum(int(stack.SERVER_POOL[k]) for k in stack.SERVER_POOL)
    conninfo = running_stack.database_uri.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None and int(row[0]) == stack.PG_MAX_CONNECTIONS
    assert stack.SERVER_WORKERS * 2 * per_engine <= stack.PG_MAX_CONNECTIONS  # tracking + auth engine per worker


def test_a_run_logs_to_the_server_and_the_report_reads_it(tiny_cohort: Path, workspace: Workspace, server: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row7", f"tracking.uri={server}",
                               "tracking.experiment=server-run", "tracking.sweep=server-run", *CHEAP)
    env = {k: v for k, v in workspace.env.items() if k != "MLFLOW_TRACKING_URI"}  # the config alone says where
    done = workspace.bench_run(args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [r for r in mlflow_runs(server) if r.info.experiment_id == _experiment_id(server, "server-run")]
    assert [r.info.status for r in runs] == ["FINISHED"]
    run = runs[0]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # served, not a path
    assert not (workspace.runs / "artifacts").exists(), "artifacts were written locally instead of to the server"
    assert run.data.params["train.num_threads"] == "1"  # num_threads=0 -> this worker's OMP_NUM_THREADS=1
    from mlflow.tracking import MlflowClient

    local = MlflowClient(server).download_artifacts(run.info.run_id, "summary.json", str(workspace.root))
    summary = json.loads(Path(local).read_text())
    assert summary["run"]["config_hash"] == run.data.tags["brainbench.config_hash"]

    again = workspace.bench_run(args, env=env)
    assert again.returncode == 0 and "skipping row7" in again.stdout + again.stderr, again.stderr[-2000:]
    assert _children(server, "server-run") == 1

    capsys.readouterr()
    out = workspace.root / "reports"
    assert bench_main(["report", "--tracking-uri", server, "--experiment", "server-run", "--out", str(out)]) == 0
    table1 = pd.read_csv(out / "table1.csv")
    assert list(table1["row"]) == [7]
    dice_csf = [c for c in table1.columns if "CSF" in c and "dice" in c.lower()]
    assert dice_csf, table1.columns
    expected = summary["mean"]["CSF"]["dice"]
    assert float(str(table1[dice_csf[0]].iloc[0]).split()[0]) == pytest.approx(expected, abs=5e-4)


def _experiment_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(name)
    assert found is not None, f"no experiment {name}"
    return str(found.experiment_id)


def _children(uri: str, experiment: str) -> int:
    return sum(1 for r in mlflow_runs(uri) if r.info.experiment_id == _experiment_id(uri, experiment))


def _race(uri: str, root: str, barrier: Any, results: Any) -> None:
    from bench.tracking.runs import Tracker

    barrier.wait()
    try:
        tracker = Tracker("race", uri, Path(root))
        parent = tracker.parent_run("race")
        child = tracker.start_child(parent, "same", "hash-race", {"a": "1"}, {})
        if child is not None:
            child.end("FINISHED")
        results.put(("ok", parent, child is not None))
    except Exception as exc:  # reported to the test
        results.put((f"{type(exc).__name__}: {str(exc)[:300]}", "", False))


def test_workers_racing_on_the_server_make_one_experiment_parent_and_run(server: str, tmp_path: Path) -> None:
    import bench.tracking.runs  # noqa: F401 - import mlflow once, before forking

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_race, args=(server, str(tmp_path / f"w{i}"), barrier, results))
               for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    answers = [results.get(timeout=5) for _ in workers]
    assert [a[0] for a in answers] == ["ok"] * 3, answers
    assert len({a[1] for a in answers}) == 1, "workers disagree on the parent run"
    assert sum(a[2] for a in answers) == 1, "the configuration ran more than once"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    runs = client.search_runs([_experiment_id(server, "race")], "")
    assert sorted(r.data.tags.get("brainbench.kind") for r in runs) == ["child", "parent"]


def _die_while_running(uri: str, root: str) -> None:
    from bench.tracking.runs import Tracker

    tracker = Tracker("reap", uri, Path(root))
    tracker.start_child(tracker.parent_run("reap"), "doomed", "hash-reap", {}, {})
    os._exit(0)  # dies without ending its run, like a SIGKILLed worker


def test_a_dead_workers_run_is_marked_killed_on_the_server(server: str, tmp_path: Path) -> None:
    import bench.tracking.runs
    from bench.tracking.runs import Tracker

    process = multiprocessing.get_context("fork").Process(target=_die_while_running, args=(server, str(tmp_path)))
    process.start()
    process.join(timeout=120)
    tracker = Tracker("reap", server, tmp_path)
    assert [r.info.status for r in tracker._search("tags.`brainbench.config_hash` = 'hash-reap'")] == ["RUNNING"]
    child = tracker.start_child(tracker.parent_run("reap"), "again", "hash-reap", {}, {})
    assert child is not None
    child.end("FINISHED")
    runs = tracker._search("tags.`brainbench.config_hash` = 'hash-reap'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    killed = next(r for r in runs if r.info.status == "KILLED")
    assert killed.data.tags[bench.tracking.runs.TAG_ERROR] == "process died while running"


@pytest.mark.parametrize("multirun", [False, True])
def test_an_unreachable_server_is_one_error_line(tiny_cohort: Path, workspace: Workspace, multirun: bool) -> None:
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row7", f"tracking.uri={uri}", *CHEAP)
    done = workspace.bench_run(args, multirun=multirun, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"tracking server {uri} is unreachable" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (workspace.runs / "outputs").exists()


def test_report_from_an_unreachable_server_is_one_error_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert bench_main(["report", "--tracking-uri", uri, "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: tracking server {uri} is unreachable"), err
    assert not (tmp_path / "reports").exists()


def test_num_threads_zero_is_the_cpus_this_worker_was_given() -> None:
    code = ("import os; from bench.hardware import worker_cpus; os.sched_setaffinity(0, {0}); "
            "print(worker_cpus())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    pinned = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert pinned.stdout.strip() == "1"  # affinity: one core, although the machine has more
    code = "from bench.hardware import worker_cpus; print(worker_cpus())"
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        limited = subprocess.run([sys.executable, "-c", code], env={**env, name: "1"}, cwd=REPO,
                                 capture_output=True, text=True, check=True)
        assert limited.stdout.strip() == "1", name
    whole = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                           check=True)
    assert whole.stdout.strip() == str(len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("launcher", ["ray", "submitit_slurm", "submitit_local"])
def test_launcher_configs_compose_with_a_cpu_count_and_fresh_processes(launcher: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from bench.sweeps import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    conf = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert isinstance(conf, dict)
    get_class(str(conf["_target_"]))  # the plugin is installed
    if launcher == "ray":
        remote = conf["ray"]["remote"]
        assert remote["num_cpus"] >= 1 and remote["max_calls"] == 1 and remote["memory"] > 0
        assert "object_store_memory" in conf["ray"]["init"]
    else:
        assert conf["cpus_per_task"] >= 1 and conf["mem_gb"] > 0
