"""The brainbench recipe (conf/experiment/brainbench, profile ``long``) composes with every ingredient on, each
ingredient switches off by one override, and both members (torch and TF) train end to end with the budget
cut to seconds; ``bench ensemble`` then scores the pair as one more row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import Workspace
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from bench.cli import main as bench_main
from bench.config import run_spec_from_config
from bench.errors import ConfigError
from bench.spec import effective_settings
from bench.sweeps import CONF_DIR, sweep_jobs, sweep_specs, to_container
from bench.tracking.runs import flatten

SECONDS_BUDGET = ["profile.epochs=1", "profile.steps_per_epoch=1", "profile.batch_size=2",
                  "profile.patches_per_epoch=2", "profile.val_batches=1", "inference.batch_size=2"]
INGREDIENTS = {  # recorded param -> value in the recipe's PyTorch member
    "model.params.block": "residual", "model.params.norm": "instance_layer", "model.params.deep_supervision": "2",
    "train.loss.name": "dice_ce", "train.scheduler.kind": "onecycle", "sampling.class_fraction": "0.33",
    "sampling.augmentation.name": "none", "sampling.region": "overlaps_brain", "model.params.base_filters": "16",
    "data.train_on_val": "True", "train.keep_weights": "last",
}
TF_INGREDIENTS = {**INGREDIENTS, "model.params.norm": "instance"}  # ILN measured in the PyTorch member only


def settings(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_container(compose(config_name="config", overrides=["data.root=unused", *overrides]))
    return flatten(effective_settings(run_spec_from_config(cfg)))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_recipe_turns_every_ingredient_on(framework: str) -> None:
    recorded = settings(f"+experiment=brainbench/unet_{framework}")
    expected = INGREDIENTS if framework == "torch" else TF_INGREDIENTS
    assert {k: recorded[k] for k in expected} == expected
    assert recorded["framework"] == framework and recorded["train.epochs"] == "180"


@pytest.mark.parametrize(("override", "param", "off"), [
    ("model.params.block=plain", "model.params.block", "plain"),
    ("model.params.deep_supervision=0", "model.params.deep_supervision", "0"),
    ("loss=dice", "train.loss.name", "dice"),
    ("sampling.class_fraction=0", "sampling.class_fraction", "0.0"),
    ("augmentation=default", "sampling.augmentation.name", "default"),  # off in the recipe: this turns it on
    ("model.params.norm=instance", "model.params.norm", "instance"),
    ("profile.scheduler.kind=plateau", "train.scheduler.kind", "plateau"),
    ("data.train_on_val=false", "data.train_on_val", None),  # not recorded when off
])
def test_each_ingredient_switches(override: str, param: str, off: object) -> None:
    recorded = settings("+experiment=brainbench/unet_torch", override)
    assert recorded.get(param) == off
    unchanged = {k: v for k, v in INGREDIENTS.items() if k != param}
    assert {k: recorded.get(k) for k in unchanged} == unchanged  # one switch turns one ingredient off


def test_sweep_jobs_expand_like_hydra_and_the_command_line_wins() -> None:
    jobs = sweep_jobs(["+sweep=brainbench", "data.root=x", "seed=1,2", "hydra/launcher=joblib"])
    assert sorted((j[0], j[-1]) for j in jobs) == [
        ("+experiment/brainbench=unet_tf", "seed=1"), ("+experiment/brainbench=unet_tf", "seed=2"),
        ("+experiment/brainbench=unet_torch", "seed=1"), ("+experiment/brainbench=unet_torch", "seed=2")]
    assert all("hydra/launcher=joblib" not in j for j in jobs)  # a launcher does not change what a job runs
    assert sweep_jobs(["+sweep=brainbench", "+experiment/brainbench=unet_tf"]) == [
        ["+experiment/brainbench=unet_tf", "+sweep=brainbench"]]
    with pytest.raises(ConfigError, match="sweep/nosuch"):
        sweep_jobs(["+sweep=nosuch"])


ABLATION = {  # conf/ablation option -> (recorded param, value when switched); mirrors test_each_ingredient_switches
    "plain_block": ("model.params.block", "plain"), "no_deep_supervision": ("model.params.deep_supervision", "0"),
    "dice_only": ("train.loss.name", "dice"), "uniform_sampling": ("sampling.class_fraction", "0.0"),
    "with_augmentation": ("sampling.augmentation.name", "default"), "instance_norm": ("model.params.norm", "instance"),
    "plateau": ("train.scheduler.kind", "plateau"),
    "centre_in_brain": ("sampling.region", "centre_in_brain"),
    "validate_on_val": ("data.train_on_val", None),  # and train.keep_weights best (below)
}


def test_the_ablation_sweep_switches_one_ingredient_per_row() -> None:
    specs = {job[1].removeprefix("+ablation="): spec
             for job, spec in sweep_specs(["+sweep=brainbench_ablation", "data.root=unused"])}
    assert set(specs) == {"all_on", *ABLATION}
    on = flatten(effective_settings(specs["all_on"]))
    assert {k: on[k] for k in INGREDIENTS} == INGREDIENTS and on["framework"] == "torch"
    for name, (param, off) in ABLATION.items():
        recorded = flatten(effective_settings(specs[name]))
        assert recorded.get(param) == off, name
        switched = {param, "train.keep_weights"} if name == "validate_on_val" else {param}  # validation picks the epoch
        assert {k: recorded.get(k) for k in INGREDIENTS if k not in switched} == {
            k: v for k, v in INGREDIENTS.items() if k not in switched}, name
    assert flatten(effective_settings(specs["validate_on_val"])).get("train.keep_weights") is None  # best: default
    assert len({s.config_hash for s in specs.values()}) == len(specs)  # ten distinct runs
    assert len({s.label for s in specs.values()}) == len(specs)  # ten distinct report rows
    assert {s.tracking.experiment for s in specs.values()} == {"brainbench-ablation-synthetic-long"}


def test_recipe_members_train_and_ensemble(tiny_cohort: Path, workspace: Workspace) -> None:
    args = [a for a in workspace.overrides(tiny_cohort, "+sweep=brainbench") if a != "profile=smoke"]
    done = workspace.bench_run([*args, *SECONDS_BUDGET], multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training loss (nothing validated) was still improving" in done.stdout + done.stderr
    runs = workspace.runs_()
    assert sorted(r.data.tags["framework"] for r in runs) == ["tf", "torch"]
    assert all(r.info.status == "FINISHED" and r.data.params["model.params.block"] == "residual" for r in runs)
    # the sweep's parent run lives in its jobs' experiment; the driver's default (table1-…) gets none
    (parent,) = workspace.runs_("parent")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    experiments = {e.experiment_id: e.name for e in MlflowClient(workspace.uri).search_experiments()}
    assert {experiments[r.info.experiment_id] for r in [*runs, parent]} == {"brainbench-synthetic-long"}
    assert set(experiments.values()) <= {"brainbench-synthetic-long", "Default"}
    for run in runs:  # the validation subjects were trained on: nothing validated, the final epoch kept
        assert run.data.params["data.train_on_val"] == "True" and run.data.params["train.keep_weights"] == "last"
        (out,) = (workspace.runs / "outputs").glob(f"*/*-{run.data.tags['brainbench.config_hash']}")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["run"]["val_subjects"] == []
        assert set(summary["run"]["train_subjects"]) == {"IBSR_01", "IBSR_03", "IBSR_07", "IBSR_16"}
        assert pd.read_csv(out / "history.csv")["val_loss"].isna().all()
    # the members are named by the sweep's own command line (`make recipe`), found by their config hashes
    assert bench_main(["ensemble", "--name", "brainbench", "--sweep", *args, *SECONDS_BUDGET]) == 0
    (row,) = [r for r in workspace.runs_() if r.data.tags["architecture"] == "ensemble:brainbench"]
    assert row.info.status == "FINISHED" and row.data.metrics["test_dice_GM"] >= 0.0
    assert sorted(json.loads(row.data.params["members"])) == sorted(r.info.run_id for r in runs)
    # --runs-dir stands for the sweep's paths.runs (paths are not part of a run's identity): same members, skipped
    elsewhere = [a for a in args if not a.startswith("paths.runs=")]
    assert bench_main(["ensemble", "--name", "brainbench", "--sweep", *elsewhere, *SECONDS_BUDGET,
                       "--runs-dir", str(workspace.runs)]) == 0
    assert len([r for r in workspace.runs_() if r.data.tags["architecture"] == "ensemble:brainbench"]) == 1
    # a member that never ran (another seed) is one error naming its job, and logs nothing
    assert bench_main(["ensemble", "--name", "other", "--sweep", *args, *SECONDS_BUDGET, "seed=7"]) == 2
    assert not [r for r in workspace.runs_() if r.data.tags["architecture"] == "ensemble:other"]
