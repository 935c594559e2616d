"""The ``full`` profile (the paper's scale, meant for a GPU) runs end to end: every Table 1 row, paper-width
networks, on CPU with its budget cut to seconds (one step of two patches, one epoch), so nothing in the
profile is broken for whoever has a GPU. ``benchmarks/gpu_check.sh`` measures its speed there.

The atlas row's budget is its registration (the CPU method of the table, the same defaults in ``quick`` and
``full``): cut here to the smoke profile's coarse grid and iterations (76 s of this test's 170 s otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Workspace

SECONDS_BUDGET = ["profile.epochs=1", "profile.steps_per_epoch=1", "profile.batch_size=2",
                  "profile.patches_per_epoch=2", "profile.val_batches=1", "inference.batch_size=2"]
SMOKE_ATLAS = yaml.safe_load((REPO / "conf" / "profile" / "smoke.yaml").read_text())["model_overrides"]["atlas"]
ATLAS_SECONDS = [f"++profile.model_overrides.atlas.{key}={json.dumps(value, separators=(',', ':'))}"
                 for key, value in SMOKE_ATLAS.items()]


@pytest.mark.parametrize(
    ("selection", "rows"),
    [pytest.param("+experiment=table1/row2,table1/row3,table1/row9", [2, 3, 9], id="each-network"),
     pytest.param("+sweep=table1", list(range(1, 10)), id="every-row", marks=pytest.mark.slow)])
def test_full_profile_runs_end_to_end(selection: str, rows: list[int], tiny_cohort: Path,
                                      workspace: Workspace) -> None:
    """Fast: one row per network at paper width (V-Net torch, NeuroNet tf, instance-norm U-Net); slow: all nine."""
    args = [a for a in workspace.overrides(tiny_cohort, selection) if a != "profile=smoke"]
    done = workspace.bench_run([*args, "profile=full", *SECONDS_BUDGET, *ATLAS_SECONDS],
                               multirun=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert sorted(int(r.data.tags["table_row"]) for r in runs) == rows
    assert all(r.info.status == "FINISHED" and r.data.tags["profile"] == "full" for r in runs)
    by_row = {r.data.tags["table_row"]: r for r in runs}
    assert by_row["9"].data.params.get("model.params.base_filters") == "32"  # the paper's U-Net, not a CPU-sized one
    assert by_row["2"].data.params["model.params.widths"] == "[16, 32, 64, 128, 256]"
    if "1" in by_row:
        atlas = by_row["1"]
        assert atlas.data.params["model.params.affine_iterations"] == str(SMOKE_ATLAS["affine_iterations"])
        assert by_row["5"].data.params.get("model.params.base_filters") == "32"
