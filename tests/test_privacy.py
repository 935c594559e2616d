"""Clinical data on a shared store: ``tracking.log_images=false``, ``log_paths=false`` and ``hash_subject_ids=true``
keep images, absolute paths and subject ids out of everything a run sends, and reports still pair subjects."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
from conftest import TINY_SUBJECTS, Workspace
from test_configs import compose_cfg

from bench.cli import main as bench_main
from bench.config import run_spec_from_config
from bench.data.synth import SUBJECT_ORDER
from bench.privacy import SALT_FILE, Privacy, hashed_id

PRIVATE = ("tracking.log_images=false", "tracking.log_paths=false", "tracking.hash_subject_ids=true")


def test_filter_hides_paths_and_ids_but_keeps_numbers() -> None:
    privacy = Privacy.build(log_images=False, log_paths=False, hash_ids=True, folders={"<data.root>": "/srv/mri"},
                            subjects=["1", "IBSR_01"], salt="s")
    text = privacy.text("read /srv/mri/IBSR_01/IBSR_01_ana.nii.gz, wrote /home/me/out/x.csv")
    assert text == f"read <data.root>/{hashed_id('IBSR_01', 's')}/{hashed_id('IBSR_01', 's')}_ana.nii.gz, wrote ***/x.csv"
    assert "IBSR_011" in privacy.text("IBSR_011")  # another subject's id is not this one's
    frame = privacy.frame(pd.DataFrame({"case": ["1", "IBSR_01"], "dice": ["0.1", "1"]}))
    assert frame["case"].tolist() == [hashed_id("1", "s"), hashed_id("IBSR_01", "s")]
    assert frame["dice"].tolist() == ["0.1", "1"]  # numbers are never taken for ids
    assert not privacy.sends(Path("p/IBSR_11.nii.gz")) and not privacy.sends(Path("history.png"))
    assert privacy.sends(Path("checkpoint/weights.pt")) and not Privacy().active
    assert hashed_id("IBSR_11", "s") == hashed_id("IBSR_11", "s") != hashed_id("IBSR_11", "t")


def test_switches_are_flags_outside_the_hash() -> None:
    base = run_spec_from_config(compose_cfg([]))
    private = run_spec_from_config(compose_cfg(list(PRIVATE)))
    assert private.tracking.record() == {"log_images": False, "log_paths": False, "hash_subject_ids": True}
    assert base.config_hash == private.config_hash  # they change what is sent, never what is computed


def test_a_bad_switch_is_one_error_line(tiny_cohort: Path, workspace: Workspace) -> None:
    done = workspace.bench_run(workspace.overrides(tiny_cohort, "tracking.log_images=maybe"))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: tracking.log_images='maybe' must be true or false"], done.stderr[-2000:]


def _store_files(runs: Path) -> list[Path]:
    return [p for p in (runs / "artifacts").rglob("*") if p.is_file()]


def test_private_runs_send_no_image_path_or_id_and_still_pair(tiny_cohort: Path, workspace: Workspace) -> None:
    args = workspace.overrides(tiny_cohort, *PRIVATE, "tracking.experiment=private",
                               "inference.blending=gaussian,mean")
    done = workspace.bench_run(args, multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert {k: v for k, v in run.data.params.items() if k.startswith("tracking.")} == {
            "tracking.log_images": "False", "tracking.log_paths": "False", "tracking.hash_subject_ids": "True"}
        assert run.data.params["data.root"] == f"***/{tiny_cohort.name}"
    salt_file = workspace.runs / SALT_FILE
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    salt = salt_file.read_text().strip()

    assert bench_main(["report", "--runs-dir", str(workspace.runs), "--experiment", "private", "--out", "report"]) == 0
    assert bench_main(["compare", "--runs-dir", str(workspace.runs), "--experiment", "private",
                       "--axis", "inference.blending", "--out", "compare"]) == 0
    pairs = pd.read_csv(workspace.root / "compare" / "compare-inference.blending.csv")
    assert len(pairs[pairs["metric"] == "dice"]) == 3  # the two runs' test subjects paired by their hashes

    ids = SUBJECT_ORDER[:TINY_SUBJECTS]
    secrets = [str(tiny_cohort), str(tiny_cohort.resolve()), *ids]
    files = _store_files(workspace.runs)
    assert files, "nothing was logged"
    stored = [(workspace.runs / "mlflow.db").read_bytes()] + [p.read_bytes() for p in files]
    names = [str(p.relative_to(workspace.runs)) for p in files]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in stored), f"{secret!r} reached the store"
        assert not any(secret in name for name in names), f"{secret!r} names a stored file"
    assert not [n for n in names if n.endswith((".nii.gz", ".png"))]
    assert any(n.endswith("brainbench_model.json") for n in names)  # the model stays: bench predict needs it
    summary = json.loads(next(p for p in files if p.name == "summary.json").read_text())
    assert sorted(summary["run"]["test_subjects"]) == sorted(hashed_id(s, salt) for s in ("IBSR_11", "IBSR_12"))
    outputs = [p for p in (workspace.runs / "outputs" / "private").rglob("*.nii.gz")]
    assert outputs, "the local outputs folder keeps the predictions"

