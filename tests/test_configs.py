"""Every config group and every Table 1 row composes and converts to a valid RunSpec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from bench import hardware
from bench.config import run_spec_from_config
from bench.errors import ConfigError
from bench.spec import effective_settings
from bench.sweeps import CONF_DIR, to_container

CONF = Path(CONF_DIR)
GROUPS = ["data", "preprocess", "model", "framework", "optimizer", "loss", "sampling", "augmentation",
          "profile"]
ROWS = sorted(p.stem for p in (CONF / "experiment" / "table1").glob("row*.yaml"))
PAPER_ROWS = {  # row: (architecture, preprocess, optimizer, loss, framework, sampling mode)
    "row1": ("atlas", "raw", None, None, None, None),
    "row2": ("vnet", "histmatch", "adadelta", "dice", "torch", "grid"),
    "row3": ("neuronet", "histmatch", "adam", "ce", "tf", "random_subset"),
    "row4": ("neuronet", "raw", "adam", "dice", "tf", "random_subset"),
    "row5": ("unet3d", "raw", "adadelta", "dice", "torch", "grid"),
    "row6": ("unet3d", "histmatch", "adadelta", "dice", "torch", "grid"),
    "row7": ("unet3d", "raw", "adadelta", "ce", "torch", "grid"),
    "row8": ("unet3d", "histmatch", "adam", "ce", "torch", "grid"),
    "row9": ("unet3d", "histmatch", "adam", "dice", "torch", "grid"),
}


def compose_cfg(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_container(compose(config_name="config", overrides=overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    extra = []
    if (group, option) == ("data", "nnunet"):  # its root has no default: a dataset.json names the labels
        (tmp_path / "imagesTr").mkdir()
        (tmp_path / "labelsTr").mkdir()
        (tmp_path / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, "CSF": 1, "lesion": 10},
            "numTraining": 0, "file_ending": ".nii.gz"}))
        extra = [f"data.root={tmp_path}"]
    spec = run_spec_from_config(compose_cfg([f"{group}={option}", *extra]))
    assert spec.config_hash
    if extra:
        assert spec.data.labels.names == ("background", "CSF", "lesion")
        assert spec.data.channels == ("T1", "FLAIR")
        assert spec.network.config.in_channels == 2 and spec.network.config.num_classes == 3


def test_nine_rows_exist() -> None:
    assert [f"row{i}" for i in range(1, 10)] == ROWS


@pytest.mark.parametrize("row", ROWS)
def test_row_mirrors_table1(row: str) -> None:
    spec = run_spec_from_config(compose_cfg([f"+experiment=table1/{row}"]))
    arch, pre, opt, loss, fw, mode = PAPER_ROWS[row]
    assert spec.row == int(row[3:])
    assert spec.model.architecture == arch
    assert spec.preprocess.name == pre
    if arch != "atlas":
        assert (spec.network.train.optimizer.name, spec.network.train.loss.name, spec.framework, spec.network.sampling.mode) == (
            opt, loss, fw, mode)


def test_row_specifics() -> None:
    row8 = run_spec_from_config(compose_cfg(["+experiment=table1/row8"]))
    assert (row8.network.sampling.oversample_class, row8.network.sampling.oversample_factor) == (1, 3)
    row9 = run_spec_from_config(compose_cfg(["+experiment=table1/row9"]))
    assert row9.model.params["norm"] == "instance_layer"  # the paper's [5]: instance-layer normalisation
    assert (row9.network.sampling.oversample_class, row9.network.sampling.oversample_factor) == (1, 3)  # built on row 8's U-Net
    row5 = run_spec_from_config(compose_cfg(["+experiment=table1/row5"]))
    assert (row5.network.train.optimizer.lr, row5.network.train.optimizer.rho, row5.network.train.optimizer.eps) == (1.0, 0.9, 1e-6)


@pytest.mark.parametrize("framework", ["torch", "tf"])
@pytest.mark.parametrize("row", ["row2", "row3", "row5"])
def test_framework_override_wins_over_row_default(row: str, framework: str) -> None:
    spec = run_spec_from_config(compose_cfg([f"+experiment=table1/{row}", f"framework={framework}"]))
    assert spec.framework == framework


def test_profile_overrides_model_widths() -> None:
    quick = run_spec_from_config(compose_cfg(["profile=quick"]))
    full = run_spec_from_config(compose_cfg(["profile=full"]))
    assert quick.model.params["base_filters"] == 8
    assert full.model.params["base_filters"] == 32


def test_quick_profile_gives_the_unet_its_own_epoch_count() -> None:
    unet = run_spec_from_config(compose_cfg(["profile=quick", "model=unet3d"]))
    vnet = run_spec_from_config(compose_cfg(["profile=quick", "model=vnet"]))
    neuronet = run_spec_from_config(compose_cfg(["profile=quick", "model=neuronet"]))
    assert (unet.network.train.epochs, vnet.network.train.epochs, neuronet.network.train.epochs) == (150, 80, 50)
    smoke = run_spec_from_config(compose_cfg(["profile=smoke", "model=unet3d"]))  # no epochs_by_model
    assert smoke.network.train.epochs == compose_cfg(["profile=smoke"])["profile"]["epochs"]


def test_background_margin_defaults_to_3_and_null_turns_it_off() -> None:
    assert run_spec_from_config(compose_cfg([])).network.inference.background_margin_voxels == 3
    off = run_spec_from_config(compose_cfg(["inference.background_margin_voxels=null"]))
    assert off.network.inference.background_margin_voxels is None


def test_hash_ignores_paths_and_tracking_but_not_seed() -> None:
    base = run_spec_from_config(compose_cfg([]))
    moved = run_spec_from_config(compose_cfg(["paths.outputs=/elsewhere", "tracking.experiment=x", "force=true"]))
    seeded = run_spec_from_config(compose_cfg(["seed=1"]))
    assert base.config_hash == moved.config_hash
    assert base.config_hash != seeded.config_hash


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer.lr=0", "optimizer.lr=0"),
        ("optimizer.lr=-1", "optimizer.lr=-1"),
        ("profile.batch_size=0", "profile.batch_size=0"),
        ("model.architecture=resnet", "model.architecture='resnet'"),
        ("loss.name=focal", "loss.name='focal'"),
        ("loss.dice_reduction=mean", "loss.dice_reduction='mean'"),
        ("profile.patch_size=[32,0,32]", "profile.patch_size"),
        ("inference.overlap=1.5", "inference.overlap=1.5"),
        ("inference.background_margin_voxels=-1", "inference.background_margin_voxels=-1"),
        ("inference.background_margin_voxels=1.5", "inference.background_margin_voxels=1.5"),
        ("+profile.epochs_by_model={unet3d: 0}", "profile.epochs_by_model.unet3d=0"),
        ("+profile.epochs_by_model={resnet: 3}", "unknown model 'resnet'"),
        ("sampling.region=edge", "sampling.region='edge' is unknown"),
        ("profile.device=gpu", "profile.device='gpu' is unknown (use one of auto, cpu, cuda)"),
    ],
)
def test_bad_config_values_name_the_setting(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        run_spec_from_config(compose_cfg([override]))
    assert needle in info.value.message


def test_profile_device_is_recorded_and_hashed_only_when_not_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_smi_gpus", lambda: ())  # no GPU, whatever machine runs the test
    auto = run_spec_from_config(compose_cfg([]))
    absent = compose_cfg([])
    del absent["profile"]["device"]  # a profile written before the setting: auto, the same run
    cpu = run_spec_from_config(compose_cfg(["profile.device=cpu"]))
    assert auto.network.train.device == "auto" and cpu.network.train.device == "cpu"
    assert run_spec_from_config(absent).config_hash == auto.config_hash != cpu.config_hash
    assert effective_settings(cpu)["train"]["device"] == "cpu"
    with pytest.raises(ConfigError, match=r"profile\.device=cuda but this machine has no usable NVIDIA GPU"):
        run_spec_from_config(compose_cfg(["profile.device=cuda"]))
    atlas = run_spec_from_config(compose_cfg(["model=atlas", "profile.device=cuda"]))  # trains nothing: no GPU needed
    assert "train" not in effective_settings(atlas)


def test_unknown_framework_is_a_config_error() -> None:
    cfg = compose_cfg([])
    cfg["framework"] = {"name": "jax"}
    with pytest.raises(ConfigError, match="framework='jax'"):
        run_spec_from_config(cfg)


def test_sweep_lists_every_row() -> None:
    """Every conf/experiment/table1/rowN.yaml is in the sweep once (the list is ordered longest row first)."""
    import yaml

    sweep = yaml.safe_load((CONF / "sweep" / "table1.yaml").read_text())
    listed = sweep["hydra"]["sweeper"]["params"]["+experiment/table1"].split(",")
    files = sorted(p.stem for p in (CONF / "experiment" / "table1").glob("row*.yaml"))
    assert sorted(listed) == files and len(listed) == len(set(listed))


def test_epochs_by_row_overrides_the_model_budget() -> None:
    row9 = run_spec_from_config(compose_cfg(["+experiment=table1/row9", "profile=quick"]))
    row5 = run_spec_from_config(compose_cfg(["+experiment=table1/row5", "profile=quick"]))
    assert (row9.segmenter.train.epochs, row5.segmenter.train.epochs) == (200, 150)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"epochs_by_row\.9=0"):
        run_spec_from_config(compose_cfg(["+experiment=table1/row9", "profile=quick", "profile.epochs_by_row={9: 0}"]))
    cfg = compose_cfg(["+experiment=table1/row9", "profile=quick"])
    cfg["profile"]["epochs_by_row"] = {"x": 3}
    with pytest.raises(ConfigError, match="epochs_by_row has key 'x'"):
        run_spec_from_config(cfg)


def test_table1_sweep_launches_all_nine_rows(tmp_path: Path) -> None:
    """The sweep file really expands to the nine rows (jobs fail fast on a bad config value)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--multirun", "+sweep=table1", "profile.batch_size=0",
         f"paths.runs={tmp_path}/runs", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert "Launching 9 jobs" in output
    assert all(f"+experiment/table1=row{i}" in output for i in range(1, 10))
    assert output.count("error: profile.batch_size=0 must be a positive integer") == 9
    assert proc.returncode == 2


@pytest.mark.parametrize("profile", options("profile"))
@pytest.mark.parametrize("model", options("model"))
def test_profile_model_params_build(profile: str, model: str) -> None:
    """Every profile's model overrides are accepted by the model's constructor."""
    spec = run_spec_from_config(compose_cfg([f"profile={profile}", f"model={model}"]))
    if spec.model.architecture == "atlas":
        from bench.baselines.atlas import build_atlas

        assert build_atlas(**spec.model.params).describe()["kind"] == spec.model.params["kind"]
    else:
        from bench.training import frameworks

        network = spec.network  # built from the spec's own config, as a run builds it
        segmenter = frameworks.build_network(network.entry, network.config, "torch")
        segmenter.check_patch_size(network.sampling.patch_size)  # type: ignore[attr-defined]


def test_patch_region_is_a_recorded_sampling_setting() -> None:
    from bench.spec import effective_settings

    default = run_spec_from_config(compose_cfg(["+experiment=table1/row5"]))
    overlap = run_spec_from_config(compose_cfg(["+experiment=table1/row5", "sampling.region=overlaps_brain"]))
    assert default.network.sampling.region == "centre_in_brain" and overlap.network.sampling.region == "overlaps_brain"
    row9 = run_spec_from_config(compose_cfg(["+experiment=table1/row9"]))  # instance norm: edge patches too
    assert row9.network.sampling.region == "overlaps_brain"
    assert effective_settings(overlap)["sampling"]["region"] == "overlaps_brain"
    assert default.config_hash != overlap.config_hash


def test_runs_that_are_not_table1_rows_have_their_own_experiment() -> None:
    """A Table 1 row logs to table1-<data>-<profile>; a user's model to <model>-<data>-<profile>; a sweep file
    or the command line may name any experiment (issue 35)."""
    row = run_spec_from_config(compose_cfg(["+experiment=table1/row5", "profile=smoke"]))
    assert (row.tracking.experiment, row.tracking.sweep) == ("table1-synthetic-smoke", "table1-synthetic-smoke")
    own = run_spec_from_config(compose_cfg(["model=monai_unet", "profile=smoke"]))
    assert (own.tracking.experiment, own.tracking.sweep) == ("monai_unet-synthetic-smoke", "monai_unet-synthetic-smoke")
    zoo = run_spec_from_config(compose_cfg(["+experiment=zoo/monai_unet", "+sweep=zoo", "profile=smoke"]))
    assert zoo.tracking.experiment == "zoo-synthetic-smoke"
    named = run_spec_from_config(compose_cfg(["tracking.experiment=mine", "profile=smoke"]))
    assert (named.tracking.experiment, named.tracking.sweep) == ("mine", "mine")


# ------------------------------------------------------------------------------- labels and channels from the data
@pytest.fixture
def lesion_root(tmp_path: Path) -> Path:
    """A dataset.json of 2 channels and 5 labels (values 0, 1, 2, 3, 10); no images are needed to configure."""
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "FLAIR"}, "file_ending": ".nii.gz", "numTraining": 0,
        "labels": {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}}))
    return tmp_path


def test_sampling_names_classes_by_label(lesion_root: Path) -> None:
    base = ["data=nnunet", f"data.root={lesion_root}", "+experiment=table1/row8"]
    spec = run_spec_from_config(compose_cfg(base))
    assert spec.network.sampling.oversample_class == 1  # row 8's CSF: class index 1
    spec = run_spec_from_config(compose_cfg([*base, "sampling.oversample_class=lesion"]))
    assert spec.network.sampling.oversample_class == 4  # value 10 is class index 4
    spec = run_spec_from_config(compose_cfg([*base, "sampling=foreground"]))
    assert spec.network.sampling.class_centres == (1, 2, 3, 4)  # null: every class but the background
    spec = run_spec_from_config(compose_cfg([*base, "sampling=foreground", "sampling.class_centres=[lesion,10]"]))
    assert spec.network.sampling.class_centres == (4, 4)
    with pytest.raises(ConfigError, match=r"oversample_class='edema' is not a class.*lesion \(10\)"):
        run_spec_from_config(compose_cfg([*base, "sampling.oversample_class=edema"]))
    with pytest.raises(ConfigError, match="oversample_class='background' is the background"):
        run_spec_from_config(compose_cfg([*base, "sampling.oversample_class=background"]))


def test_ibsr_rows_keep_their_class_indices() -> None:
    row8 = run_spec_from_config(compose_cfg(["+experiment=table1/row8"]))
    assert row8.network.sampling.oversample_class == 1
    from bench.spec import data_record

    assert "labels" not in data_record(row8.data) and "channels" not in data_record(row8.data)
    recipe = run_spec_from_config(compose_cfg(["sampling=foreground"]))
    assert recipe.network.sampling.class_centres == (1, 2, 3)


def test_the_data_give_the_networks_channels_and_classes(lesion_root: Path) -> None:
    base = ["data=nnunet", f"data.root={lesion_root}"]
    spec = run_spec_from_config(compose_cfg([*base, "+experiment=table1/row9"]))
    record = spec.model.params
    assert (record["in_channels"], record["num_classes"]) == (2, 5)
    from bench.spec import data_record

    assert data_record(spec.data)["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}
    assert data_record(spec.data)["channels"] == ["T1", "FLAIR"]
    monai = run_spec_from_config(compose_cfg([*base, "model=monai_unet"]))
    assert monai.model.params["in_channels"] == 2 and monai.model.params["out_channels"] == 5
    with pytest.raises(ConfigError, match=r"model.params.num_classes=4 but the data give 5"):
        run_spec_from_config(compose_cfg([*base, "+model.params.num_classes=4"]))
    with pytest.raises(ConfigError, match="atlas baselines segment one T1"):
        run_spec_from_config(compose_cfg([*base, "model=atlas"]))


def test_nnunet_data_without_dataset_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no dataset.json"):
        run_spec_from_config(compose_cfg(["data=nnunet", f"data.root={tmp_path}"]))


def test_nnunet_data_are_named_after_their_folder(lesion_root: Path) -> None:
    spec = run_spec_from_config(compose_cfg(["data=nnunet", f"data.root={lesion_root}", "+experiment=table1/row9"]))
    assert spec.data.name == lesion_root.name
    assert spec.tracking.experiment == f"table1-{lesion_root.name}-quick"
    named = run_spec_from_config(compose_cfg(["data=nnunet", f"data.root={lesion_root}", "data.name=mine"]))
    assert named.data.name == "mine" and named.tracking.experiment == "unet3d-mine-quick"


def test_nnunet_data_without_a_root_say_so() -> None:
    with pytest.raises(ConfigError, match=r"data\.root is not set"):
        run_spec_from_config(compose_cfg(["data=nnunet"]))
