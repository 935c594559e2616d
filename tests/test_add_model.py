"""README "Adding a model", executable: a new architecture in both frameworks from three files.

The test writes a torch net file, a Keras net file and one model YAML into a temporary folder (outside the
repository), and trains the model end to end with ``python -m bench.run --config-dir ... model=toynet``
in each framework: nothing in brainbench is edited. The saved checkpoint loads again in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, Workspace

TORCH_NET = '''
"""A toy network for brainbench: two 3x3x3 convolutions (torch)."""
from torch import nn


class ToyNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(config.in_channels, config.width, 3, padding=1), nn.ReLU(),
            nn.Conv3d(config.width, config.num_classes, 1),
        )

    def forward(self, x):
        return self.body(x)
'''

TF_NET = '''
"""The same toy network in Keras (channels-last, free spatial size)."""
import keras


def build(config):
    image = keras.Input(shape=(None, None, None, config.in_channels))
    x = keras.layers.Conv3D(config.width, 3, padding="same", activation="relu")(image)
    return keras.Model(image, keras.layers.Conv3D(config.num_classes, 1)(x))
'''

MODEL_YAML = """
# A toy architecture: its builders and the type of each parameter, then the parameters' values.
architecture: toynet
implementation:
  torch: toymodels.toynet_torch:ToyNet
  tf: toymodels.toynet_tf:build
  params: {in_channels: int, num_classes: int, width: int}   # each parameter and its type
params:
  in_channels: 1
  num_classes: 4
  width: 4
"""


@pytest.fixture
def toy_package(tmp_path: Path) -> Path:
    """The three files a newcomer writes, in a folder of their own; returns that folder."""
    folder = tmp_path / "mymodels"
    (folder / "toymodels").mkdir(parents=True)
    (folder / "toymodels" / "toynet_torch.py").write_text(textwrap.dedent(TORCH_NET))
    (folder / "toymodels" / "toynet_tf.py").write_text(textwrap.dedent(TF_NET))
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "conf" / "model" / "toynet.yaml").write_text(MODEL_YAML)
    return folder


def test_three_files_add_a_model_in_both_frameworks(
    tiny_cohort: Path, workspace: Workspace, toy_package: Path
) -> None:
    written = sorted(str(p.relative_to(toy_package)) for p in toy_package.rglob("*") if p.is_file())
    assert written == ["conf/model/toynet.yaml", "toymodels/toynet_tf.py", "toymodels/toynet_torch.py"]
    env = {**workspace.env, "PYTHONPATH": f"{REPO}:{toy_package}"}
    args = ["--config-dir", str(toy_package / "conf"),
            *workspace.overrides(tiny_cohort, "model=toynet", "framework=torch,tf")]
    done = workspace.bench_run(args, multirun=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for framework in ("torch", "tf"):
        assert f"toynet-{framework}-raw-seed0: Dice CSF" in done.stdout

    runs = workspace.runs_()
    assert sorted(r.data.tags["framework"] for r in runs) == ["tf", "torch"]
    assert all(r.info.status == "FINISHED" and r.data.tags["architecture"] == "toynet" for r in runs)
    for framework in ("torch", "tf"):
        (out,) = (workspace.runs / "outputs").glob(f"*/toynet-{framework}-raw-seed0-*")
        summary = json.loads((out / "summary.json").read_text())
        described = summary["run"]["segmenter"]
        assert described["architecture"] == "toynet" and described["framework"] == framework
        assert described["params"] == {"in_channels": 1, "num_classes": 4, "width": 4}
        # 1*4*27 + 4 weights and biases, then 4*4 + 4: the same network in both frameworks
        assert described["trainable_parameters"] == 4 * 27 + 4 + 4 * 4 + 4
        assert summary["run"]["epochs_run"] == 2
        # The checkpoint names its builders, so a fresh process that never read the YAML can load it.
        load = (f"from bench.training import frameworks; import numpy as np; s = frameworks.load({str(out / 'checkpoint')!r}); "
                "print(s.name, s.framework, s.predict_patches(np.zeros((1, 1, 8, 8, 8), np.float32)).shape)")
        loaded = subprocess.run([PYTHON, "-c", load], env=env, capture_output=True, text=True, timeout=300,
                                check=False)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert loaded.stdout.split() == ["toynet", framework, "(1,", "4,", "8,", "8,", "8)"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.params.width=two", "toynet.width='two' must be an integer"),
        ("+model.params.depth=3", "toynet has no parameter 'depth'"),
        ("~model.params.width", "toynet needs a value for 'width'"),
        ("model.implementation.params.width=integer", "model.implementation.params.width='integer' is not a known"),
        ("model.implementation.torch=toymodels.missing:Net", "module 'toymodels.missing' not found"),
    ],
)
def test_bad_toy_model_config_is_one_error_line(
    tiny_cohort: Path, workspace: Workspace, toy_package: Path, override: str, needle: str
) -> None:
    env = {**workspace.env, "PYTHONPATH": f"{REPO}:{toy_package}"}
    args = ["--config-dir", str(toy_package / "conf"), *workspace.overrides(tiny_cohort, "model=toynet", override)]
    done = workspace.bench_run(args, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert workspace.runs_() == []  # nothing was started


def test_unknown_architecture_points_to_adding_a_model(tiny_cohort: Path, workspace: Workspace) -> None:
    done = workspace.bench_run(workspace.overrides(tiny_cohort, "model.architecture=mynet"), timeout=300)
    assert done.returncode == 2
    assert "model.architecture='mynet' is unknown" in done.stderr and "Adding a model" in done.stderr


def test_missing_builder_attribute_fails_the_run_cleanly(
    tiny_cohort: Path, workspace: Workspace, toy_package: Path
) -> None:
    """Only importing a builder's module (and with it the framework) can show a missing attribute: the dry
    forward pass before the run (issue 34) shows it as one error line, and no MLflow run is opened (it was
    FAILED before that check existed; never RUNNING either way)."""
    env = {**workspace.env, "PYTHONPATH": f"{REPO}:{toy_package}"}
    override = "model.implementation.torch=toymodels.toynet_torch:Nope"
    args = ["--config-dir", str(toy_package / "conf"), *workspace.overrides(tiny_cohort, "model=toynet", override)]
    done = workspace.bench_run(args, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "toymodels.toynet_torch has no attribute 'Nope'" in errors[0]
    assert [run.info.status for run in workspace.runs_()] == []
