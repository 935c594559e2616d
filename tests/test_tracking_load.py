"""The tracking load test (issue 39, part 4): its counting of lost and duplicated runs and points and its
percentiles on synthetic numbers; and (slow) a real run against an ``--auth`` stack that loses nothing."""

from __future__ import annotations

import numpy as np
import pytest
from stack_helpers import processes_mentioning, require_postgres

from bench.tracking.load import ARTIFACT_NAME, RunView
from benchmarks.tracking_load import main, percentile, render, verify


def _view(name: str, epochs: int = 3, metrics: int = 2, status: str = "FINISHED",
          artifact: bool = True) -> RunView:
    return RunView(name, status, {f"m{i}": list(range(epochs)) for i in range(metrics)},
                   (ARTIFACT_NAME,) if artifact else ())


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentiles_match_numpy(q: float, n: int) -> None:
    values = list(np.random.default_rng(n).exponential(0.05, n))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_no_values_have_no_percentile() -> None:
    assert np.isnan(percentile([], 50))


def test_a_complete_server_is_clean() -> None:
    check = verify(["a", "b"], [_view("a"), _view("b")], epochs=3, metrics=2)
    assert check.clean


def test_lost_and_duplicated_runs_and_points_are_counted() -> None:
    holey = _view("b")
    holey.steps["m0"].remove(1)  # one point lost
    holey.steps["m1"].append(2)  # one point twice
    views = [_view("a"), _view("a"), holey, _view("d", status="RUNNING", artifact=False)]
    check = verify(["a", "b", "c", "d"], views, epochs=3, metrics=2)
    assert check.runs_lost == 1  # c
    assert check.runs_duplicated == 1  # a
    assert check.points_lost == 1 + 3 * 2  # b's hole and all of c's
    assert check.points_duplicated == 1
    assert (check.not_finished, check.artifacts_missing) == (1, 1)  # d
    assert not check.clean


def test_a_metric_missing_altogether_loses_all_its_points() -> None:
    view = RunView("a", "FINISHED", {"m0": [0, 1, 2]}, (ARTIFACT_NAME,))
    assert verify(["a"], [view], epochs=3, metrics=2).points_lost == 3


@pytest.mark.slow
def test_a_real_auth_stack_under_load_loses_and_doubles_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    require_postgres()
    code = main(["--clients", "2", "6", "--epochs", "3", "--metrics", "2", "--deadline-s", "240"])
    report = capsys.readouterr().out
    assert code == 0, report
    rows = [line for line in report.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["2", "6"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[1:7] == ["0"] * 6, row  # lost, duplicated, points lost/duplicated, unfinished, no artifact
        assert float(cells[7]) > 0 and float(cells[11]) > 0  # a latency and a rate were measured
    assert processes_mentioning("bbload-") == [], "the stack it started is still running"


def test_the_report_says_when_the_deadline_stopped_it() -> None:
    assert "Stopped at the deadline" in render([], 3, 2, stopped=True)
