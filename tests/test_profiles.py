"""The ``full`` profile (the paper's scale, meant for a GPU) runs end to end: every Table 1 row, paper-width
networks, on CPU with its budget cut to seconds (one step of two patches, one epoch), so nothing in the
profile is broken for whoever has a GPU. ``benchmarks/gpu_check.sh`` measures its speed there.

The atlas row's budget is its registration (the CPU method of the table, the same defaults in ``quick`` and
``full``): cut here to the smoke profile's coarse grid and iterations (76 s of this test's 170 s otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import REPO, Workspace

SECONDS_BUDGET = ["profile.epochs=1", "profile.steps_per_epoch=1", "profile.batch_size=2",
                  "profile.patches_per_epoch=2", "profile.val_batches=1", "inference.batch_size=2"]
SMOKE_ATLAS = yaml.safe_load((REPO / "conf" / "profile" / "smoke.yaml").read_text())["model_overrides"]["atlas"]
ATLAS_SECONDS = [f"++profile.model_overrides.atlas.{key}={json.dumps(value, separators=(',', ':'))}"
                 for key, value in SMOKE_ATLAS.items()]


def test_full_profile_runs_every_row_end_to_end(tiny_cohort: Path, workspace: Workspace) -> None:
    args = [a for a in workspace.overrides(tiny_cohort, "+sweep=table1") if a != "profile=smoke"]
    done = workspace.bench_run([*args, "profile=full", *SECONDS_BUDGET, *ATLAS_SECONDS],
                               multirun=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert sorted(int(r.data.tags["table_row"]) for r in runs) == list(range(1, 10))
    assert all(r.info.status == "FINISHED" and r.data.tags["profile"] == "full" for r in runs)
    widths = {r.data.tags["table_row"]: r.data.params.get("model.params.base_filters") for r in runs}
    assert widths["5"] == widths["9"] == "32"  # the paper's U-Net, not a CPU-sized one
    vnet = next(r for r in runs if r.data.tags["table_row"] == "2")
    assert vnet.data.params["model.params.widths"] == "[16, 32, 64, 128, 256]"
    atlas = next(r for r in runs if r.data.tags["table_row"] == "1")
    assert atlas.data.params["model.params.affine_iterations"] == str(SMOKE_ATLAS["affine_iterations"])
