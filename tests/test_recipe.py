"""The brainbench recipe (conf/experiment/brainbench, profile ``long``) composes with every ingredient on, each
ingredient switches off by one override, and both members (torch and TF) train end to end with the budget
cut to seconds; ``bench ensemble`` then scores the pair as one more row."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Workspace
from hydra import compose, initialize_config_dir

from bench.cli import main as bench_main
from bench.config import run_spec_from_config
from bench.run import CONF_DIR, to_container
from bench.spec import effective_settings
from bench.tracking import flatten

SECONDS_BUDGET = ["profile.epochs=1", "profile.steps_per_epoch=1", "profile.batch_size=2",
                  "profile.patches_per_epoch=2", "profile.val_batches=1", "inference.batch_size=2"]
INGREDIENTS = {  # recorded param -> value in the recipe
    "model.params.block": "residual", "model.params.norm": "instance", "model.params.deep_supervision": "2",
    "train.loss.name": "dice_ce", "train.scheduler.kind": "onecycle", "sampling.class_fraction": "0.33",
    "sampling.augmentation.name": "default", "sampling.region": "overlaps_brain", "model.params.base_filters": "16",
}


def settings(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_container(compose(config_name="config", overrides=["data.root=unused", *overrides]))
    return flatten(effective_settings(run_spec_from_config(cfg)))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_recipe_turns_every_ingredient_on(framework: str) -> None:
    recorded = settings(f"+experiment=brainbench/unet_{framework}")
    assert {k: recorded[k] for k in INGREDIENTS} == INGREDIENTS
    assert recorded["framework"] == framework and recorded["train.epochs"] == "250"


@pytest.mark.parametrize(("override", "param", "off"), [
    ("model.params.block=plain", "model.params.block", "plain"),
    ("model.params.deep_supervision=0", "model.params.deep_supervision", "0"),
    ("loss=dice", "train.loss.name", "dice"),
    ("sampling.class_fraction=0", "sampling.class_fraction", "0.0"),
    ("augmentation=none", "sampling.augmentation.name", "none"),
    ("profile.scheduler.kind=plateau", "train.scheduler.kind", "plateau"),
])
def test_each_ingredient_switches_off(override: str, param: str, off: object) -> None:
    recorded = settings("+experiment=brainbench/unet_torch", override)
    assert recorded.get(param) == off
    unchanged = {k: v for k, v in INGREDIENTS.items() if k != param}
    assert {k: recorded.get(k) for k in unchanged} == unchanged  # one switch turns one ingredient off


def test_recipe_members_train_and_ensemble(tiny_cohort: Path, workspace: Workspace) -> None:
    args = [a for a in workspace.overrides(tiny_cohort, "+sweep=brainbench") if a != "profile=smoke"]
    done = workspace.bench_run([*args, *SECONDS_BUDGET], multirun=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert sorted(r.data.tags["framework"] for r in runs) == ["tf", "torch"]
    assert all(r.info.status == "FINISHED" and r.data.params["model.params.block"] == "residual" for r in runs)
    ids = [r.info.run_id for r in runs]
    assert bench_main(["ensemble", "--runs", *ids, "--name", "brainbench", "--runs-dir", str(workspace.runs)]) == 0
    (row,) = [r for r in workspace.runs_() if r.data.tags["architecture"] == "ensemble:brainbench"]
    assert row.info.status == "FINISHED" and row.data.metrics["test_dice_GM"] >= 0.0
