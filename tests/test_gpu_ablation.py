"""``benchmarks.gpu_ablation``: ``pack`` composes the ablation sweep and preprocesses the cohort into one file;
``run`` loads it in processes that cannot import SimpleITK, MLflow, Hydra or TensorFlow (a bare CUDA box),
calibrates, gives every variant the same epochs and scores each on the test subjects. Here it runs on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Workspace

from benchmarks import gpu_ablation

pytestmark = pytest.mark.slow

BARE_MACHINE = """  # sitecustomize.py: every process started with it on PYTHONPATH lacks these packages
import builtins, sys
for name in ("mlflow", "hydra", "omegaconf", "tensorflow", "keras"):
    sys.modules[name] = None  # importing them fails, as on a machine without them
real_import = builtins.__import__
def no_simpleitk(name, *args, **kwargs):
    if name.split(".")[0] == "SimpleITK" and "SimpleITK" not in sys.modules:  # until the script's stand-in
        raise ImportError("no SimpleITK on this machine")
    return real_import(name, *args, **kwargs)
builtins.__import__ = no_simpleitk
"""


def test_pack_then_run_without_the_tracking_stack(tiny_cohort: Path, workspace: Workspace, tmp_path: Path) -> None:
    overrides = [a for a in workspace.overrides(tiny_cohort, "+sweep=brainbench_ablation",
                                                "+ablation=all_on,validate_on_val") if a != "profile=smoke"]
    budget = ["profile.epochs=5", "profile.steps_per_epoch=1", "profile.batch_size=2", "profile.patches_per_epoch=2",
              "profile.val_batches=1", "inference.batch_size=2"]  # the recipe's profile, cut to seconds
    packed = tmp_path / "pack.pkl.gz"
    assert gpu_ablation.main(["pack", "--out", str(packed), *overrides, *budget]) == 0
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "sitecustomize.py").write_text(BARE_MACHINE)
    env = {**os.environ, "PYTHONPATH": str(bare)}  # the run and its per-variant processes alike
    blocked = subprocess.run([sys.executable, "-c", "import mlflow"], env=env, capture_output=True, check=False)
    assert blocked.returncode != 0  # the stand-in machine really lacks the tracking stack
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_ablation", "run", "--pack", str(packed), "--out",
                           str(out), "--deadline-s", "400", "--reserve-s", "200", "--calibration-epochs", "2"],
                          cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"all_on", "validate_on_val"} and not summary["failed"]
    assert 1 <= summary["epochs"] <= 5  # the profile's epochs at most, the same for every variant
    for name, result in summary["results"].items():
        assert result["epochs"] == summary["epochs"] and len(result["seconds_per_epoch"]) == summary["epochs"]
        assert {row["case"] for row in result["per_subject"]} == {"IBSR_11", "IBSR_12"}, name
        assert all(0.0 <= result["test"][t]["dice"] <= 1.0 for t in ("CSF", "GM", "WM"))
    validated = summary["results"]["validate_on_val"]
    assert validated["label"].startswith("recipe validated on the validation subjects")
    # two cohorts in one pack: the recipe trains on its validation subject, the variant validates on it
    assert validated["val_dice_last"] and summary["results"]["all_on"]["val_dice_last"] is None
