"""``bench runs export`` / ``bench runs import`` (bench/tracking/transfer.py): a finished run carried from one store
to another keeps its records (params, tags, metric histories, the report's text artifacts), leaves images and
weights behind, is not imported twice, and makes a sweep against the target store skip it (it resumes there);
bad export files are one line, exit 2, nothing written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Workspace, mlflow_runs

from bench.cli import main as bench_main

CHEAP = ("+experiment=table1/row5", "data.split={train:[IBSR_01],val:[IBSR_07],test:[IBSR_11]}",
         "inference.overlap=0", "profile.num_threads=1", "tracking.experiment=moved")


def _target(workspace: Workspace, name: str) -> Workspace:
    """A second, empty store beside the workspace's, with the subprocess environment pointing at it."""
    root = workspace.root / name
    runs = root / "runs"
    runs.mkdir(parents=True)
    target = Workspace(root=root, runs=runs, env=dict(workspace.env))
    target.env["MLFLOW_TRACKING_URI"] = target.uri
    return target


def _histories(uri: str) -> dict[str, list[tuple[int, int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = mlflow_runs(uri)
    return {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics}


def test_a_run_moves_between_stores_and_the_sweep_resumes_there(
        tiny_cohort: Path, workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    args = workspace.overrides(tiny_cohort, *CHEAP)
    done = workspace.bench_run(args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (source_run,) = mlflow_runs(workspace.uri)

    export = workspace.root / "moved.json.gz"
    assert bench_main(["runs", "export", "--tracking-uri", workspace.uri, "--runs-dir", str(workspace.runs),
                       "--experiment", "moved", "--out", str(export)]) == 0
    document = json.loads(gzip.decompress(export.read_bytes()))
    (record,) = document["runs"]
    assert sorted(record["artifacts"]) == ["history.csv", "metrics.csv", "per_subject_metrics.json", "summary.json"]
    assert record["params"] == dict(source_run.data.params)
    assert len(document["parents"]) == 1

    target = _target(workspace, "elsewhere")
    capsys.readouterr()
    imported = ["runs", "import", str(export), "--tracking-uri", target.uri, "--runs-dir", str(target.runs)]
    assert bench_main(imported) == 0
    assert "imported 1 runs into 'moved'" in capsys.readouterr().out
    (moved,) = mlflow_runs(target.uri)
    assert moved.info.status == "FINISHED" and moved.info.run_name == source_run.info.run_name
    assert moved.data.params == source_run.data.params
    assert moved.info.start_time == source_run.info.start_time and moved.info.end_time == source_run.info.end_time
    assert moved.data.tags["brainbench.imported_from"] == source_run.info.run_id
    assert _own_tags(moved) == _own_tags(source_run)  # config hash, host, pid, convergence, ...
    parents = mlflow_runs(target.uri, "parent")
    assert [p.info.run_id for p in parents] == [moved.data.tags["mlflow.parentRunId"]]
    assert _histories(target.uri) == _histories(workspace.uri)  # every point of every metric, steps and times
    assert "predictions" not in {a.path for a in _artifacts(target.uri, moved.info.run_id)}

    assert bench_main(imported) == 0  # a second import adds nothing
    assert "imported 0 runs into 'moved', 1 skipped" in capsys.readouterr().out
    assert len(mlflow_runs(target.uri)) == 1

    for store, folder in ((workspace, "report-source"), (target, "report-target")):
        assert bench_main(["report", "--tracking-uri", store.uri, "--runs-dir", str(store.runs),
                           "--experiment", "moved", "--out", str(workspace.root / folder)]) == 0
    source_table = pd.read_csv(workspace.root / "report-source" / "table1.csv")
    target_table = pd.read_csv(workspace.root / "report-target" / "table1.csv")
    pd.testing.assert_frame_equal(source_table, target_table)

    again = target.bench_run(target.overrides(tiny_cohort, *CHEAP), timeout=600)  # the sweep, against the target
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipping row5" in again.stdout + again.stderr
    assert [r.info.run_id for r in mlflow_runs(target.uri)] == [moved.info.run_id]


def _own_tags(run: Any) -> dict[str, str]:
    """A run's tags without MLflow's own (``mlflow.*``: parent id, user, logged models) and the import mark."""
    return {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != "brainbench.imported_from"}


def _artifacts(uri: str, run_id: str) -> list[object]:
    from mlflow.tracking import MlflowClient

    return list(MlflowClient(tracking_uri=uri).list_artifacts(run_id))


@pytest.mark.parametrize(("content", "problem"), [
    (b"{not json", "not a brainbench runs export (unreadable JSON"),
    (json.dumps({"format": "something-else"}).encode(), "its 'format' is not 'brainbench-runs'"),
    (json.dumps({"format": "brainbench-runs", "version": 99}).encode(), "version 99 is not supported"),
    (json.dumps({"format": "brainbench-runs", "version": 1, "experiment": "x", "parents": [],
                 "runs": [{"run_name": "a"}]}).encode(), "runs[0] lacks status, start_time"),
    (json.dumps({"format": "brainbench-runs", "version": 1, "experiment": "x", "parents": [],
                 "runs": [{"run_name": "a", "status": "FINISHED", "start_time": 1, "end_time": 2, "params": {},
                           "tags": {}, "metrics": {}, "artifacts": {}}]}).encode(), "has no brainbench.config_hash"),
])
def test_a_bad_export_file_is_one_line(tmp_path: Path, content: bytes, problem: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    runs = tmp_path / "target"
    code = bench_main(["runs", "import", str(bad), "--runs-dir", str(runs),
                       "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error:") and problem in err[0] and str(bad) in err[0]
    assert not runs.exists()  # no store was created


def test_a_missing_export_file_and_a_bad_filter(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    missing = workspace.root / "nowhere.json"
    assert bench_main(["runs", "import", str(missing), "--runs-dir", str(workspace.runs)]) == 2
    assert "no such export file" in capsys.readouterr().err
    from bench.tracking.runs import Tracker

    Tracker("some", workspace.uri, workspace.runs)  # an experiment to export from
    code = bench_main(["runs", "export", "--experiment", "some", "--filter", "params.x ==== 'y'",
                       "--out", str(workspace.root / "x.json"), "--runs-dir", str(workspace.runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "MLflow cannot search with the filter" in err[0], err
    assert not (workspace.root / "x.json").exists()
