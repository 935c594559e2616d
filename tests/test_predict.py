"""Trained models used again: two real smoke runs (torch 3D U-Net on raw images, TF NeuroNet on histogram-matched
ones) log their models to MLflow; ``bench predict`` in a fresh process reproduces a run's own test predictions
and Dice; registry, ensembles of both frameworks (``bench predict`` and ``bench ensemble`` + ``bench report``),
test-time flips on a symmetric scan, scans in another orientation or spacing, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import PYTHON, REPO, Workspace, mlflow_runs, temp_files

from bench.cli import main as bench_main
from bench.evaluation.evaluate import evaluate_case
from bench.io import Volume, read_volume, write_volume
from bench.types import TISSUE_NAMES

TEST_IDS = ("IBSR_11", "IBSR_12")


@dataclass
class Trained:
    """The two finished runs, their output folders, and the folder of their test scans."""

    ws: Workspace
    torch_run: str
    tf_run: str
    outputs: dict[str, Path]  # run id -> outputs folder
    scans: Path
    labels: dict[str, Path]


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, empty_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("predict")
    runs = root / "runs"
    runs.mkdir()
    shutil.copy(empty_store, runs / "mlflow.db")
    ws = Workspace(root=root, runs=runs)
    ws.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "BENCH_"))}
    ws.env.update(MLFLOW_TRACKING_URI=ws.uri, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for row in ("row5", "row3"):  # torch U-Net on raw images; TF NeuroNet on histogram-matched ones
        done = ws.bench_run(ws.overrides(tiny_cohort, f"+experiment=table1/{row}"), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    by_framework = {r.data.tags["framework"]: r for r in mlflow_runs(ws.uri)}
    outputs = {r.info.run_id: next((runs / "outputs").glob(f"*/{r.info.run_name}-*")) for r in by_framework.values()}
    scans = root / "scans"
    scans.mkdir()
    labels = {}
    for subject in TEST_IDS:
        folder = next(p for p in tiny_cohort.glob(f"*/{subject}") if p.is_dir())
        shutil.copy(folder / f"{subject}.nii.gz", scans)
        labels[subject] = folder / f"{subject}_seg.nii.gz"
    return Trained(ws, by_framework["torch"].info.run_id, by_framework["tf"].info.run_id, outputs, scans, labels)


@pytest.fixture
def env(trained: Trained, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Trained:
    """The trained store as this test's MLflow store; the working folder a fresh ``tmp_path``."""
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "BENCH_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.ws.uri)
    monkeypatch.chdir(tmp_path)
    return trained


def predict(*args: str) -> int:
    return bench_main(["predict", *args])


def probabilities(path: Path) -> np.ndarray:
    """A ``_probabilities.nii.gz`` as ``[K, X, Y, Z]``."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(0, 3, 2, 1)


def test_runs_log_models_and_predict_in_a_fresh_process_reproduces_the_run(env: Trained) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env.ws.uri)
    for run_id in (env.torch_run, env.tf_run):
        run = client.get_run(run_id)
        (model,) = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
        assert (str(model.status).endswith("READY"), model.model_type, model.name) == (True, "brainbench",
                                                                                        run.info.run_name)
        assert model.params["patch_size"] == "[16, 16, 16]" and model.params["blending"] == "gaussian"
        assert model.tags["framework"] == run.data.tags["framework"]
        assert json.loads(model.params["versions"])[{"torch": "torch", "tf": "keras"}[model.tags["framework"]]]
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]  # linked to the run
        files = {f.path for f in client.list_logged_model_artifacts(model.model_id)}
        assert {"MLmodel", "brainbench_model.json", "network"} <= files
        record = json.loads((env.outputs[run_id] / "model" / "brainbench_model.json").read_text())
        assert record["labels"] == {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}
        assert record["inference"]["background_margin_voxels"] == 3 and record["versions"]["numpy"]
    tf_record = json.loads((env.outputs[env.tf_run] / "model" / "brainbench_model.json").read_text())
    histmatch = tf_record["preprocess"]["steps"][0]
    assert histmatch["name"] == "histmatch" and histmatch["arrays"].endswith(".npz")

    # a fresh process, only brainbench + torch: the run's own test subjects give the run's label maps and Dice
    out = env.ws.root / "fresh"
    done = subprocess.run([PYTHON, "-m", "bench", "predict", "--model", f"runs:/{env.torch_run}", "--input",
                           str(env.scans), "--out", str(out)], cwd=env.ws.root, env=env.ws.env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "error" not in done.stderr and "2 scan(s) segmented" in done.stdout
    table = pd.read_csv(env.outputs[env.torch_run] / "metrics.csv")
    for subject in TEST_IDS:
        ours = read_volume(out / f"{subject}.nii.gz")
        logged = read_volume(env.outputs[env.torch_run] / "predictions" / f"{subject}.nii.gz")
        scan = read_volume(env.scans / f"{subject}.nii.gz")
        assert ours.shape == scan.shape and ours.spacing_mm == scan.spacing_mm
        assert ours.origin_mm == scan.origin_mm and ours.direction == scan.direction
        np.testing.assert_array_equal(ours.array, logged.array)
        for row in evaluate_case(ours, read_volume(env.labels[subject]), subject):
            stored = table[(table["case"] == subject) & (table["class"] == row["class"])].iloc[0]
            assert abs(row["dice"] - stored["dice"]) <= 1e-6
    assert temp_files(out) == []


def test_registered_tf_model_reproduces_its_run(env: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["register", env.tf_run, "neuronet-tf"]) == 0
    assert "models:/neuronet-tf/1" in capsys.readouterr().out
    out = Path("out")
    assert predict("--model", "models:/neuronet-tf/1", "--input", str(env.scans), "--out", str(out)) == 0
    for subject in TEST_IDS:
        logged = read_volume(env.outputs[env.tf_run] / "predictions" / f"{subject}.nii.gz")
        np.testing.assert_array_equal(read_volume(out / f"{subject}.nii.gz").array, logged.array)


def test_ensemble_of_torch_and_tf_averages_their_softmax(env: Trained) -> None:
    models = {"torch": str(env.outputs[env.torch_run] / "model"), "tf": f"runs:/{env.tf_run}"}
    for name, model in models.items():
        assert predict("--model", model, "--input", str(env.scans), "--out", name, "--probabilities") == 0
    assert predict("--model", models["torch"], "--model", models["tf"], "--input", str(env.scans), "--out", "both",
                   "--probabilities") == 0
    for subject in TEST_IDS:
        single = [probabilities(Path(name) / f"{subject}_probabilities.nii.gz") for name in models]
        mean = probabilities(Path("both") / f"{subject}_probabilities.nii.gz")
        np.testing.assert_allclose(mean, (single[0] + single[1]) / 2, atol=1e-6)
        np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-5)
        labels = read_volume(Path("both") / f"{subject}.nii.gz").array
        np.testing.assert_array_equal(labels, np.argmax(mean, axis=0))
        assert not np.array_equal(single[0], single[1])  # two different models, so the mean is informative


def test_bench_ensemble_logs_a_report_row(env: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    runs = str(env.ws.runs)
    assert bench_main(["ensemble", "--runs", env.torch_run, env.tf_run, "--name", "both", "--runs-dir", runs]) == 0
    (run,) = [r for r in mlflow_runs(env.ws.uri) if r.data.tags["architecture"] == "ensemble:both"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["framework"] == "tf+torch" and run.data.tags["split"] == "paper"
    members = {r.info.run_id: r for r in mlflow_runs(env.ws.uri)}
    assert run.data.tags["mlflow.parentRunId"] == members[env.torch_run].data.tags["mlflow.parentRunId"]
    out = next((env.ws.runs / "outputs").glob("*/ensemble-both-*"))
    table = pd.read_csv(out / "metrics.csv")
    assert sorted(table["case"].unique()) == list(TEST_IDS)
    for subject in TEST_IDS:  # the stored metrics are those of the stored ensemble prediction
        rows = evaluate_case(read_volume(out / "predictions" / f"{subject}.nii.gz"),
                             read_volume(env.labels[subject]), subject)
        for row in rows:
            stored = table[(table["case"] == subject) & (table["class"] == row["class"])].iloc[0]
            assert row["dice"] == pytest.approx(stored["dice"], abs=1e-12)
    for tissue in TISSUE_NAMES.values():
        mean = table[table["class"] == tissue]["dice"].mean()
        assert run.data.metrics[f"test_dice_{tissue}"] == pytest.approx(mean)
    # the same ensemble again is skipped
    assert bench_main(["ensemble", "--runs", env.torch_run, env.tf_run, "--name", "both", "--runs-dir", runs]) == 0
    assert "skipping" in capsys.readouterr().out
    # bench report shows it as one more row
    assert bench_main(["report", "--runs-dir", runs, "--out", "reports"]) == 0
    report = pd.read_csv("reports/table1.csv")
    assert "ensemble:both" in set(report["model"])
    row = report[report["model"] == "ensemble:both"].iloc[0]
    for tissue in TISSUE_NAMES.values():
        assert row[f"dice_{tissue}_mean"] == pytest.approx(table[table["class"] == tissue]["dice"].mean())


def mirrored(volume: Volume) -> Volume:
    """``volume`` made symmetric under flipping its x axis (the mean of it and its mirror image)."""
    array = volume.array.astype(np.float32)
    return volume.with_array((array + array[::-1]) / 2)


def test_flips_make_a_symmetric_scan_give_a_symmetric_segmentation(env: Trained,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    scan = mirrored(read_volume(env.scans / "IBSR_11.nii.gz"))
    write_volume(scan, Path("sym") / "sym.nii.gz")
    model = str(env.outputs[env.torch_run] / "model")
    assert predict("--model", model, "--input", "sym/sym.nii.gz", "--out", "tta", "--tta", "flips",
                   "--probabilities") == 0
    # row 5 trains without augmentation: flips are allowed, with a warning naming the model
    assert "trained without flip augmentation" in capsys.readouterr().err
    probs = probabilities(Path("tta/sym_probabilities.nii.gz"))
    np.testing.assert_allclose(probs, probs[:, ::-1], atol=1e-5)
    labels = read_volume(Path("tta/sym.nii.gz")).array
    ties = np.sort(probs, axis=0)[-1] - np.sort(probs, axis=0)[-2] < 1e-5
    np.testing.assert_array_equal(labels[~ties], labels[::-1][~ties])
    # without flips the tiling and the network are not symmetric: the test above is not trivially true
    assert predict("--model", model, "--input", "sym/sym.nii.gz", "--out", "plain", "--probabilities") == 0
    plain = probabilities(Path("plain/sym_probabilities.nii.gz"))
    assert np.abs(plain - plain[:, ::-1]).max() > 1e-3


@pytest.mark.parametrize(("augmentation", "warned"), [
    ({"name": "none"}, True),
    ({"name": "flips", "flip_prob": [0.5, 0.5, 0.5]}, False),
    (None, False),  # a folder written before the augmentation was recorded: unknown, no warning
])
def test_flips_warn_only_for_models_trained_without_flips(env: Trained, augmentation: dict[str, object] | None,
                                                          warned: bool) -> None:
    from bench.predict.model import LoadedModel, flip_warnings

    model = Path(shutil.copytree(env.outputs[env.torch_run] / "model", "model"))
    record = json.loads((model / "brainbench_model.json").read_text())
    assert record["augmentation"] == {"name": "none"}  # what the run wrote
    if augmentation is None:
        del record["augmentation"]
    else:
        record["augmentation"] = augmentation
    (model / "brainbench_model.json").write_text(json.dumps(record))
    warnings = flip_warnings([LoadedModel.load(model)])
    assert len(warnings) == int(warned)
    assert all("trained without flip augmentation" in w for w in warnings)


def test_other_orientation_and_spacing_are_resampled_in_and_back(env: Trained) -> None:
    model = str(env.outputs[env.torch_run] / "model")
    original = read_volume(env.scans / "IBSR_11.nii.gz")
    # the same scan stored with x and z swapped (the direction says so): physically identical
    d = np.asarray(original.direction).reshape(3, 3)[:, [2, 1, 0]]
    s = original.spacing_mm
    swapped = Volume(np.ascontiguousarray(original.array.transpose(2, 1, 0)), (s[2], s[1], s[0]),
                     original.origin_mm, tuple(d.ravel()))
    write_volume(swapped, Path("in/swapped.nii.gz"))
    # and resampled to voxels twice as large along x
    image = original.to_sitk()
    coarse = sitk.Resample(image, [image.GetSize()[0] // 2, *image.GetSize()[1:]], sitk.Transform(), sitk.sitkLinear,
                           image.GetOrigin(), (2 * s[0], s[1], s[2]), image.GetDirection(), 0.0, image.GetPixelID())
    write_volume(Volume.from_sitk(coarse), Path("in/coarse.nii.gz"))
    shutil.copy(env.scans / "IBSR_11.nii.gz", "in/IBSR_11.nii.gz")
    assert predict("--model", model, "--input", "in", "--out", "out") == 0
    for name, source in (("swapped", swapped), ("coarse", Volume.from_sitk(coarse))):
        out = read_volume(Path("out") / f"{name}.nii.gz")
        assert (out.shape, out.spacing_mm, out.origin_mm, out.direction) == (
            source.shape, source.spacing_mm, source.origin_mm, source.direction)
    reference = read_volume(Path("out/IBSR_11.nii.gz")).array
    back = read_volume(Path("out/swapped.nii.gz")).array.transpose(2, 1, 0)
    assert np.mean(back == reference) > 0.999
    coarse_labels = read_volume(Path("out/coarse.nii.gz")).array
    assert np.mean(coarse_labels == reference[::2][: coarse_labels.shape[0]]) > 0.8


def test_bad_inputs_give_one_error_line_and_no_output(env: Trained, capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    model = str(env.outputs[env.torch_run] / "model")
    good = env.scans / "IBSR_11.nii.gz"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not an image")
    (bad / "empty.nii.gz").write_bytes(b"")
    four_d = sitk.JoinSeries([sitk.Image([8, 8, 8], sitk.sitkFloat32) + 1.0] * 2)
    sitk.WriteImage(four_d, str(bad / "four_d.nii.gz"))
    nan = read_volume(good).array.astype(np.float32)
    nan[3, 3, 3] = np.nan
    import nibabel as nib

    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(bad / "nan.nii.gz"))
    zero = read_volume(good).with_array(np.zeros(read_volume(good).shape, np.int16))
    write_volume(zero, bad / "zero.nii.gz")
    jax = tmp_path / "jax_model"
    shutil.copytree(model, jax)
    record = json.loads((jax / "brainbench_model.json").read_text())
    (jax / "brainbench_model.json").write_text(json.dumps({**record, "framework": "jax"}))
    corrupt = tmp_path / "corrupt_model"  # the TF model's histogram-matching state, truncated
    shutil.copytree(env.outputs[env.tf_run] / "model", corrupt)
    (npz,) = (corrupt / "preprocess").glob("*.npz")
    npz.write_bytes(npz.read_bytes()[:100])
    parent = mlflow_runs(env.ws.uri, "parent")[0].info.run_id
    (tmp_path / "a_file").write_text("")
    cases = {
        "notes.txt": (["--model", model, "--input", str(bad / "notes.txt")], "not a NIfTI"),
        "empty": (["--model", model, "--input", str(bad / "empty.nii.gz")], "file is empty"),
        "4D": (["--model", model, "--input", str(bad / "four_d.nii.gz")], "4D image"),
        "NaN": (["--model", model, "--input", str(bad / "nan.nii.gz")], "1 NaN"),
        "all-zero": (["--model", model, "--input", str(bad / "zero.nii.gz")], "all-zero"),
        "folder with one bad scan": (["--model", model, "--input", str(bad)], "file is empty"),
        "no model": (["--model", f"runs:/{parent}", "--input", str(good)], "logged no model"),
        "unknown run": (["--model", "runs:/0123456789abcdef", "--input", str(good)], "no MLflow run"),
        "unknown framework": (["--model", str(jax), "--input", str(good)], "unknown framework 'jax'"),
        "corrupt preprocessing": (["--model", str(corrupt), "--input", str(good)],
                                  f"{npz}: cannot read the preprocessing state"),
        "not a model": (["--model", str(tmp_path), "--input", str(good)], "not a brainbench model"),
        "bad registry name": (["--model", "models:/nothing/1", "--input", str(good)], "no registered model"),
    }
    for name, (args, message) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        capsys.readouterr()
        assert predict(*args, "--out", str(out)) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (name, err)
        assert not out.exists() or not any(out.iterdir()), name
    capsys.readouterr()
    assert predict("--model", model, "--input", str(good), "--out", str(tmp_path / "a_file")) == 2
    assert "output folder is a file" in capsys.readouterr().err
    assert bench_main(["register", parent, "x"]) == 2
    assert "logged no model" in capsys.readouterr().err
    runs = ["--runs-dir", str(env.ws.runs)]
    assert bench_main(["ensemble", "--runs", env.torch_run, "--name", "one", *runs]) == 2
    assert "at least two different runs" in capsys.readouterr().err
    assert bench_main(["ensemble", "--runs", env.torch_run, "0123456789abcdef", "--name", "x", *runs]) == 2
    assert "no MLflow run '0123456789abcdef'" in capsys.readouterr().err
    assert not [r for r in mlflow_runs(env.ws.uri) if r.data.tags["architecture"].startswith("ensemble:")
                and r.info.status != "FINISHED"]  # nothing left RUNNING or FAILED
