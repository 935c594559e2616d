"""Networks named by their import path (``_target_``, issue 34): a model YAML and a factory in the user's own
package, trained end to end in both frameworks; the target in the run's identity; bad model YAMLs as one error
line, exit 2, no traceback and no MLflow run; MONAI's networks from ``conf/model`` in a sweep beside rows 5
and 9, reported as their own rows.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, Workspace

from bench.config import run_spec_from_config
from bench.errors import ConfigError
from bench.networks.target import TargetConfig, instantiate_network
from bench.sweeps import compose_config, to_container

FACTORIES = '''
"""Toy networks for brainbench, built by keyword (torch and Keras)."""


def conv_net(in_ch, classes, width=4, kernel=3):
    from torch import nn

    return nn.Sequential(nn.Conv3d(in_ch, width, kernel, padding=kernel // 2), nn.ReLU(),
                         nn.Conv3d(width, classes, 1))


def wide_conv_net(in_ch, classes, width=4, kernel=3):
    """The same signature, another network: twice the width."""
    return conv_net(in_ch, classes, 2 * width, kernel)


def two_classes(in_ch, classes, width=4, kernel=3):
    """Ignores the class count it is given."""
    return conv_net(in_ch, 2, width, kernel)


def halves(in_ch, classes, width=4, kernel=3):
    """Down-samples by 2 and never up again: the output is half the patch."""
    from torch import nn

    return nn.Sequential(nn.Conv3d(in_ch, classes, 2, stride=2))


def broken(in_ch, classes, width=4, kernel=3):
    raise ValueError("width must be even")


def keras_net(in_ch, classes, width=4):
    import keras

    image = keras.Input(shape=(None, None, None, in_ch))
    x = keras.layers.Conv3D(width, 3, padding="same", activation="relu")(image)
    return keras.Model(image, keras.layers.Conv3D(classes, 1)(x))
'''

MODEL_YAML = """
# A YAML-only model: its factories by import path, their keywords beside them.
architecture: toyconv
channels: {in: in_ch, out: classes}
torch:
  _target_: toyzoo.nets.conv_net
  width: 4
  kernel: 3
tf:
  _target_: toyzoo.nets.keras_net
  width: 4
"""


@pytest.fixture
def toy_zoo(tmp_path: Path) -> Path:
    """A user's folder: a package of factories and ``conf/model/toyconv.yaml``; nothing in brainbench edited."""
    folder = tmp_path / "user"
    (folder / "toyzoo").mkdir(parents=True)
    (folder / "toyzoo" / "__init__.py").write_text("")
    (folder / "toyzoo" / "nets.py").write_text(textwrap.dedent(FACTORIES))
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "conf" / "model" / "toyconv.yaml").write_text(MODEL_YAML)
    return folder


def _args(workspace: Workspace, cohort: Path, toy_zoo: Path, *extra: str) -> list[str]:
    return ["--config-dir", str(toy_zoo / "conf"), *workspace.overrides(cohort, "model=toyconv", *extra)]


def _env(workspace: Workspace, toy_zoo: Path) -> dict[str, str]:
    return {**workspace.env, "PYTHONPATH": f"{REPO}:{toy_zoo}"}


def _one_error(done: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return errors[0]


def test_yaml_only_model_trains_in_both_frameworks(tiny_cohort: Path, workspace: Workspace, toy_zoo: Path) -> None:
    done = workspace.bench_run(_args(workspace, tiny_cohort, toy_zoo, "framework=torch,tf"), multirun=True,
                               env=_env(workspace, toy_zoo), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert sorted(r.data.tags["framework"] for r in runs) == ["tf", "torch"]
    assert all(r.info.status == "FINISHED" and r.data.tags["architecture"] == "toyconv" for r in runs)
    by_framework = {r.data.tags["framework"]: r for r in runs}
    # The record says what was called: the target and every keyword, the channels the data gave included.
    assert by_framework["torch"].data.params["model.params._target_"] == "toyzoo.nets.conv_net"
    assert by_framework["tf"].data.params["model.params._target_"] == "toyzoo.nets.keras_net"
    assert by_framework["torch"].data.params["model.params.classes"] == "4"
    assert by_framework["torch"].data.params["model.params.in_ch"] == "1"
    for framework, width_params in (("torch", 4 * 27 + 4 + 4 * 4 + 4), ("tf", 4 * 27 + 4 + 4 * 4 + 4)):
        (out,) = (workspace.runs / "outputs").glob(f"*/toyconv-{framework}-raw-seed0-*")
        described = json.loads((out / "summary.json").read_text())["run"]["segmenter"]
        assert described["trainable_parameters"] == width_params
        # The checkpoint names its callable: a fresh process that never read the YAML loads and applies it.
        load = ("from bench.training import frameworks; import numpy as np; "
                f"s = frameworks.load({str(out / 'checkpoint')!r}); "
                "print(s.name, s.framework, s.predict_patches(np.zeros((1, 1, 8, 8, 8), np.float32)).shape)")
        loaded = subprocess.run([PYTHON, "-c", load], env=_env(workspace, toy_zoo), capture_output=True, text=True,
                                timeout=300, check=False)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert loaded.stdout.split() == ["toyconv", framework, "(1,", "4,", "8,", "8,", "8)"]


def test_changing_only_the_target_changes_the_hash(tiny_cohort: Path, workspace: Workspace, toy_zoo: Path) -> None:
    done = workspace.bench_run(
        _args(workspace, tiny_cohort, toy_zoo, "model.torch._target_=toyzoo.nets.conv_net,toyzoo.nets.wide_conv_net"),
        multirun=True, env=_env(workspace, toy_zoo), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already finished" not in done.stderr + done.stdout
    runs = workspace.runs_()
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert len({r.data.tags["brainbench.config_hash"] for r in runs}) == 2
    assert {r.data.params["model.params._target_"] for r in runs} == {"toyzoo.nets.conv_net",
                                                                       "toyzoo.nets.wide_conv_net"}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.torch._target_=toyzoo.nets.conv_nett", "toyzoo.nets has no attribute 'conv_nett' (closest: conv_net"),
        ("model.torch._target_=toyzoo.nets.two_classes", "gives 2 output channels for 4 classes"),
        ("model.torch._target_=toyzoo.nets.halves", "gives an output of [2, 4, 8, 8, 8]"),
        ("+model.torch.widht=8", "has no keyword 'widht' (closest: width)"),
        ("model.torch._target_=toyzoo.nets.broken", "toyzoo.nets.broken(...) raised ValueError: width must be even"),
        ("model.torch._target_=nowhere.nets.conv_net", "no module named 'nowhere'"),
        ("+model.torch.classes=3", "model.torch.classes=3 is set by the harness from the data"),
        ("~model.channels", "does not say which keywords receive the input channels and the classes"),
        ("+profile.epoch=5", "profile.epoch is not a setting (closest: epochs"),
    ],
)
def test_bad_model_yaml_is_one_error_line_and_no_run(
    tiny_cohort: Path, workspace: Workspace, toy_zoo: Path, override: str, needle: str
) -> None:
    done = workspace.bench_run(_args(workspace, tiny_cohort, toy_zoo, override), env=_env(workspace, toy_zoo),
                               timeout=300)
    assert needle in _one_error(done)
    assert workspace.runs_() == []  # checked before a run was opened: nothing RUNNING, nothing FAILED
    assert not list(workspace.runs.glob("outputs/*/*"))  # and no outputs


def test_patch_too_small_names_the_smallest_patch(tiny_cohort: Path, workspace: Workspace) -> None:
    """MONAI's BasicUNet with instance norm has one voxel left at its bottom on smoke's 16³ patches."""
    done = workspace.bench_run(workspace.overrides(tiny_cohort, "model=monai_basicunet",
                                                   "~profile.model_overrides.monai_basicunet"), timeout=300)
    line = _one_error(done)
    assert "model monai_basicunet (torch) fails on a zero batch of 2 patches of [16, 16, 16]" in line
    assert "Expected more than 1 spatial element" in line and "profile.patch_size=[32, 32, 32]" in line
    assert workspace.runs_() == []


@pytest.mark.slow  # the MONAI models train in test_yaml_only_model_trains_in_both_frameworks and build in
# test_zoo_model_configs_build_from_yaml_alone; this is the whole sweep beside two rows (52 s)
def test_zoo_sweep_beside_rows_5_and_9_reports_each_model(tiny_cohort: Path, workspace: Workspace) -> None:
    """``+sweep=zoo``: MONAI's UNet, BasicUNet, SegResNet and DynUNet from YAML alone, beside rows 5 and 9;
    ``bench report`` shows each as its own row, named by its model."""
    done = workspace.bench_run([*workspace.overrides(tiny_cohort, "+sweep=zoo"), "hydra/launcher=joblib",
                                "hydra.launcher.n_jobs=2"], multirun=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = workspace.runs_()
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    models = sorted(r.data.tags["architecture"] for r in runs)
    assert models == ["monai_basicunet", "monai_dynunet", "monai_segresnet", "monai_unet", "unet3d", "unet3d"]
    report = subprocess.run([PYTHON, "-m", "bench.cli", "report", "--experiment", "zoo-synthetic-smoke",
                             "--runs-dir", str(workspace.runs), "--out", str(workspace.root / "report")],
                            cwd=workspace.root, env=workspace.env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (workspace.root / "report" / "table1.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| N ")]
    assert len(rows) == 6
    for name in ("MONAI UNet", "MONAI BasicUNet", "MONAI SegResNet", "MONAI DynUNet"):
        assert sum(name + " in row 9" in row for row in rows) == 1
    assert [row.split(" | ")[0] for row in rows[:2]] == ["| 5 †", "| 9 †"]


# ------------------------------------------------------------------------------------- in-process


def _spec(*overrides: str) -> object:
    return run_spec_from_config(to_container(compose_config(["data.root=/data", "profile=smoke", *overrides])))


@pytest.mark.parametrize("model", ["monai_unet", "monai_basicunet", "monai_segresnet", "monai_dynunet"])
def test_zoo_model_configs_build_from_yaml_alone(model: str) -> None:
    spec = _spec(f"model={model}")
    network = spec.network  # type: ignore[attr-defined]
    assert isinstance(network.config, TargetConfig) and network.config.target.startswith("monai.networks.nets.")
    import torch

    net = instantiate_network(network.config)
    assert isinstance(net, torch.nn.Module)
    with torch.no_grad():
        net.eval()
        assert tuple(net(torch.zeros(2, 1, 16, 16, 16)).shape) == (2, 4, 16, 16, 16)


def test_overrides_reach_the_constructor_and_the_record() -> None:
    spec = _spec("model=monai_unet", "model.torch.channels=[8,16,32,64]", "model.torch.num_res_units=0")
    params = spec.model.params  # type: ignore[attr-defined]
    # the profile's smoke override of channels is applied after the YAML, the command line before it
    assert params["_target_"] == "monai.networks.nets.UNet"
    assert params["num_res_units"] == 1 and params["channels"] == [4, 8, 16, 32]
    assert (params["in_channels"], params["out_channels"]) == (1, 4)
    quick = _spec("model=monai_unet", "profile=quick", "model.torch.channels=[8,16,32,64]")
    assert quick.model.params["channels"] == [8, 16, 32, 64]  # type: ignore[attr-defined]
    assert quick.config_hash != _spec("model=monai_unet", "profile=quick").config_hash  # type: ignore[attr-defined]


def test_nested_targets_and_tuples_are_instantiated() -> None:
    """Keyword values of any YAML type: nested ``_target_`` mappings are called first (Hydra's rule)."""
    config = TargetConfig(name="x", framework="torch", target="monai.networks.nets.BasicUNet",
                          kwargs={"spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4],
                                  "act": ["leakyrelu", {"negative_slope": 0.2}],
                                  "dropout": {"_target_": "builtins.float", "_args_": ["0.1"]}})
    net = instantiate_network(config)
    assert type(net).__name__ == "BasicUNet"
    assert any(type(m).__name__ == "Dropout3d" or type(m).__name__ == "Dropout" for m in net.modules())


def test_implementation_builder_is_part_of_the_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect of issue 34: one name and parameters with another builder was skipped as already finished."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def build(config):\n    raise SystemExit\n")
    (tmp_path / "pkg" / "b.py").write_text("def build(config):\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bench.networks import registry

    base = to_container(compose_config(["data.root=/data", "profile=smoke"]))
    hashes = set()
    for builder in ("pkg.a:build", "pkg.b:build"):
        registry._REGISTRY.pop("idnet", None)
        cfg = {**base, "model": {"architecture": "idnet", "params": {"width": 2},
                                 "implementation": {"torch": builder, "params": {"width": "int"}}}}
        spec = run_spec_from_config(cfg)
        assert spec.model.params == {"width": 2}
        hashes.add(spec.config_hash)
    registry._REGISTRY.pop("idnet", None)
    assert len(hashes) == 2


def test_target_config_refuses_what_the_harness_sets() -> None:
    with pytest.raises(ConfigError, match="set by the harness"):
        TargetConfig(name="x", target="m.N", kwargs={"out_channels": 2})
    with pytest.raises(ConfigError, match="both name the keyword"):
        TargetConfig(name="x", target="m.N", in_key="c", out_key="c")
    with pytest.raises(ConfigError, match="is a built-in name"):
        _spec("model=monai_unet", "model.architecture=unet3d")
    with pytest.raises(ConfigError, match="has no tf network"):
        _spec("model=monai_unet", "framework=tf")


def test_a_config_class_importing_the_old_module_is_told_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's NetConfig subclass written before the move (``from adapters.configs import NetConfig``)."""
    (tmp_path / "oldpkg").mkdir()
    (tmp_path / "oldpkg" / "__init__.py").write_text("")
    (tmp_path / "oldpkg" / "net.py").write_text("from adapters.configs import NetConfig\n\nclass Config(NetConfig):\n"
                                                "    pass\n\ndef build(config):\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = to_container(compose_config(["data.root=/data", "profile=smoke"]))
    cfg = {**base, "model": {"architecture": "oldnet", "params": {},
                             "implementation": {"torch": "oldpkg.net:build", "config": "oldpkg.net:Config"}}}
    with pytest.raises(ConfigError, match=r"imports adapters\.configs, which moved") as raised:
        run_spec_from_config(cfg)
    assert raised.value.fix == "import bench.networks.configs instead of adapters.configs"


def test_a_registered_network_without_channel_parameters_runs_only_on_the_papers_labels(tmp_path: Path) -> None:
    from bench.networks import registry

    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "file_ending": ".nii.gz", "numTraining": 0,
        "labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}}))
    base = to_container(compose_config(["data=nnunet", f"data.root={tmp_path}", "profile=smoke"]))
    registry._REGISTRY.pop("idnet", None)
    cfg = {**base, "model": {"architecture": "idnet", "params": {"width": 2},
                             "implementation": {"torch": "pkg.a:build", "params": {"width": "int"}}}}
    with pytest.raises(ConfigError, match=r"config has no parameter 'num_classes'.*\(5 here\)"):
        run_spec_from_config(cfg)
    registry._REGISTRY.pop("idnet", None)
