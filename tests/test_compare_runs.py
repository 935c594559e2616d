"""End to end: two row-9 configurations that differ only in ``sampling.region`` share one experiment; the report
shows both, named by the setting, and ``bench compare --axis sampling.region`` pairs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import Workspace

from bench.cli import main as bench_main


def test_two_regions_of_row_9_are_two_rows_and_one_pair(tiny_cohort: Path, workspace: Workspace,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row9", "sampling.region=centre_in_brain,overlaps_brain",
                               "tracking.experiment=regions")
    done = workspace.bench_run(args, multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs_dir = str(workspace.runs)
    assert bench_main(["report", "--runs-dir", runs_dir, "--experiment", "regions", "--out", "report"]) == 0
    table = (workspace.root / "report" / "table1.md").read_text()
    assert "unet3d · sampling.region=centre_in_brain" in table and "unet3d · sampling.region=overlaps_brain" in table
    frame = pd.read_csv(workspace.root / "report" / "table1.csv")
    assert sorted(frame["variant"]) == ["sampling.region=centre_in_brain", "sampling.region=overlaps_brain"]

    capsys.readouterr()
    assert bench_main(["compare", "--runs-dir", runs_dir, "--experiment", "regions", "--axis", "sampling.region",
                       "--out", "compare"]) == 0
    printed = capsys.readouterr().out
    assert "overlaps_brain − centre_in_brain" in printed or "overlaps_brain" in printed
    pairs = pd.read_csv(workspace.root / "compare" / "compare-sampling.region.csv")
    assert len(pairs[(pairs["metric"] == "dice")]) == 3  # one pair × CSF, GM, WM
    assert (workspace.root / "compare" / "compare-sampling.region.png").read_bytes()[:4] == b"\x89PNG"
