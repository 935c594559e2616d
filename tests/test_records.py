"""A run's record says what ran: MLflow params and the identity hash are the effective settings.

Profile overrides and defaults are applied before anything is logged or hashed; settings that do not
apply to a method (framework and training for the atlas) are neither. Runs also carry their dataset as an
MLflow dataset input, a description and their source, in an experiment that opens in the model-training
view. k-fold splits are reproducible axes of a sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Workspace
from hydra import compose, initialize_config_dir

from bench.config import run_spec_from_config
from bench.data.discovery import discover
from bench.data.folds import FoldSplit, fold_of_subject, fold_split
from bench.errors import ConfigError
from bench.spec import effective_settings
from bench.sweeps import CONF_DIR, to_container
from bench.tracking.runs import flatten


def spec_of(*overrides: str):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return run_spec_from_config(to_container(compose(config_name="config", overrides=list(overrides))))


def test_two_smoke_rows_log_the_networks_they_built(tiny_cohort: Path, workspace: Workspace) -> None:
    """Rows 9 (U-Net, instance norm) and 2 (V-Net): the profile shrinks both; the params say so."""
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row9,table1/row2")
    done = workspace.bench_run(args, multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {run.data.tags["table_row"]: run for run in workspace.runs_()}
    assert sorted(runs) == ["2", "9"]
    for row, run in runs.items():
        (out,) = (workspace.runs / "outputs").glob(f"*/row{row}-*")
        built = json.loads((out / "checkpoint" / "segmenter.json").read_text())["params"]
        logged = {k.removeprefix("model.params."): v for k, v in run.data.params.items()
                  if k.startswith("model.params.")}
        assert logged == flatten(built), row
        assert run.data.params["framework"] == "torch"
        assert run.data.params["train.epochs"] == "2" and run.data.params["sampling.patch_size"] == "[16, 16, 16]"
        assert not any(k.startswith(("profile.", "paths.")) for k in run.data.params)
        tracking = {k for k in run.data.params if k.startswith("tracking.")}  # the privacy switches only, no URI
        assert tracking == {"tracking.log_images", "tracking.log_paths", "tracking.hash_subject_ids"}
        # MLflow as its users expect: description, source, dataset inputs with digests per split
        assert run.data.tags["mlflow.note.content"] == run.data.tags["label"] != ""
        assert run.data.tags["mlflow.source.name"] == "python -m bench.run"
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "train", "val"]
        assert inputs["test"].name == "synthetic:paper:test" and len(inputs["test"].digest) == 16
        assert json.loads(inputs["test"].profile or "{}") != {} or inputs["test"].schema
    # how each fit ended, and its training curves as an artifact (smoke: 2 epochs, stopping off)
    for row, run in runs.items():
        assert run.data.tags["brainbench.convergence"] in ("still_improving", "plateaued")
        assert "brainbench.unlearned_classes" in run.data.tags
        (out,) = (workspace.runs / "outputs").glob(f"*/row{row}-*")
        assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        curves = (out / "history.csv").read_text().splitlines()
        assert curves[0].startswith("epoch,patches_seen,train_loss,val_loss") and len(curves) == 3
        summary = json.loads((out / "summary.json").read_text())["run"]
        assert summary["convergence"] == run.data.tags["brainbench.convergence"]
        assert summary["patches_seen"] == 2 * 3 * 4  # smoke: 2 epochs of 3 batches of 4
    from mlflow.tracking import MlflowClient

    client = MlflowClient(workspace.uri)
    assert "history.png" in {a.path for a in client.list_artifacts(runs["9"].info.run_id)}
    assert runs["9"].data.params["model.params.base_filters"] == "4"  # smoke override, not the YAML's 32
    assert runs["9"].data.params["model.params.norm"] == "instance_layer"
    assert runs["2"].data.params["model.params.widths"] == "[4, 8, 16]"

    experiment = client.get_experiment(runs["9"].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_vnet_width_changes_only_the_vnet_hash() -> None:
    widen = "profile.model_overrides.vnet.widths=[8,16,32,64]"
    for row in ("row1", "row5", "row9"):
        assert spec_of(f"+experiment=table1/{row}").config_hash == spec_of(f"+experiment=table1/{row}", widen).config_hash
    assert spec_of("+experiment=table1/row2").config_hash != spec_of("+experiment=table1/row2", widen).config_hash


def test_settings_that_do_not_apply_are_neither_logged_nor_hashed() -> None:
    atlas = spec_of("+experiment=table1/row1")
    assert atlas.config_hash == spec_of("+experiment=table1/row1", "framework=tf", "optimizer=adadelta",
                                        "loss=ce", "profile.epochs=99", "row=3", "label=x").config_hash
    settings = effective_settings(atlas)
    assert set(settings) == {"record_version", "data", "preprocess", "model", "seed"}
    assert settings["model"]["params"]["kind"] == "mni" and settings["model"]["params"]["seed"] == 0
    assert "working_spacing_mm" in settings["model"]["params"]  # registration defaults filled in
    unet = spec_of("+experiment=table1/row5")
    assert unet.config_hash != spec_of("+experiment=table1/row5", "framework=tf").config_hash
    assert unet.config_hash == spec_of("+experiment=table1/row5", "label=renamed", "row=7").config_hash
    assert effective_settings(unet)["train"]["optimizer"]["name"] == "adadelta"
    assert "progress" not in effective_settings(unet)["train"]
    steps = effective_settings(spec_of("preprocess=histmatch"))["preprocess"]["steps"]
    assert steps[0]["name"] == "histmatch" and steps[0]["match_points"] == 7 and len(steps) == 2


def test_quick_profile_row9_records_the_width_it_builds() -> None:
    """The old record logged base_filters=32 for quick row 9 while the network had 8."""
    spec = spec_of("+experiment=table1/row9", "profile=quick")
    assert spec.model.params["base_filters"] == 8
    assert flatten(effective_settings(spec))["model.params.base_filters"] == "8"


def test_atlas_swept_over_two_frameworks_runs_once(tiny_cohort: Path, workspace: Workspace) -> None:
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row1", "framework=torch,tf")
    done = workspace.bench_run(args, multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags["framework"] == "sitk" and "framework" not in runs[0].data.params
    assert not any(k.startswith(("train.", "sampling.", "inference.")) for k in runs[0].data.params)


# ------------------------------------------------------------------------------------------------ folds
def test_folds_cover_every_labelled_subject_once_stratified_by_spacing(tiny_cohort: Path) -> None:
    found = discover(tiny_cohort)
    labelled = sorted(s.id for s in found.subjects if s.label_path is not None)
    folds = fold_of_subject(found, FoldSplit(folds=3, fold=0, seed=0))
    assert sorted(folds) == labelled
    tested = [sid for k in range(3) for sid, split in fold_split(found, FoldSplit(3, k, 0)).items() if split == "test"]
    assert sorted(tested) == labelled  # each labelled subject is tested exactly once
    for k in range(3):
        assignment = fold_split(found, FoldSplit(3, k, 0))
        assert set(assignment.values()) == {"train", "val", "test"}
        assert [s for s, f in folds.items() if f == (k + 1) % 3] == [s for s, v in assignment.items() if v == "val"]
    assert fold_of_subject(found, FoldSplit(3, 0, 0)) == folds  # fixed by the seed
    assert fold_of_subject(found, FoldSplit(3, 0, 1)) != folds or len(labelled) < 3


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.fold=5"], "data.fold=5 is out of range for data.folds=5"),
        (["data.fold=-1"], "data.fold=-1 is out of range"),
        (["data.fold=0", "data.folds=1"], "data.folds=1 must be an integer >= 2"),
    ],
)
def test_bad_fold_settings_name_the_setting(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec_of(*overrides)
    assert needle in info.value.message


def test_too_many_folds_for_the_subjects_is_one_error_line(tiny_cohort: Path, workspace: Workspace) -> None:
    done = workspace.bench_run(workspace.overrides(tiny_cohort, "data.fold=0", "data.folds=9"), timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.folds=9 needs at least 9 labelled subjects" in errors[0]
    assert workspace.runs_() == []


def test_a_fold_run_records_its_fold(tiny_cohort: Path, workspace: Workspace) -> None:
    args = workspace.overrides(tiny_cohort, "+experiment=table1/row5", "data.fold=1", "data.folds=3")
    done = workspace.bench_run(args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = workspace.runs_()
    assert run.data.tags["fold"] == "1" and run.data.tags["split"] == "fold1of3-seed0"
    assert (run.data.params["data.split.fold"], run.data.params["data.split.folds"]) == ("1", "3")
    (out,) = (workspace.runs / "outputs").glob("*/row5-*")
    summary = json.loads((out / "summary.json").read_text())
    expected = fold_split(discover(tiny_cohort), FoldSplit(3, 1, 0))
    assert summary["run"]["test_subjects"] == [s for s, v in expected.items() if v == "test"]
    assert summary["run"]["folds"] == fold_of_subject(discover(tiny_cohort), FoldSplit(3, 1, 0))
