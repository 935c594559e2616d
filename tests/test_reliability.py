"""Bad input at every entry point: exit code 2, one ``error:`` line naming the file or setting, no traceback,
no half-written output, no MLflow run left RUNNING (issue 5).

Each case builds its bad file or config in a temporary folder (from a private copy of the tiny synthetic
cohort) and runs ``bench data``, ``bench evaluate``, ``bench synth`` or ``bench report`` in-process through
``bench.cli.main``, or ``python -m bench.run`` in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import Workspace, temp_files

from bench.cli import main as bench_main
from bench.evaluation.metrics import EMPTY_MASK_RULE
from bench.io import Volume, read_volume, write_volume
from bench.run import hydra_error_line

TRAIN = "Training_Set/IBSR_01"
IMAGE = f"{TRAIN}/IBSR_01.nii.gz"
LABEL = f"{TRAIN}/IBSR_01_seg.nii.gz"
TEST_LABEL = "Validation_Set/IBSR_11/IBSR_11_seg.nii.gz"


@dataclass
class Call:
    """How to run one bad case and what to expect.

    Attributes:
        argv: ``bench`` arguments (``kind="cli"``) or ``bench.run`` overrides (``kind="run"``).
        mentions: Substrings the error line must contain (the file or the setting, and the problem).
        kind: ``cli`` or ``run``.
        absent: Outputs that must not exist afterwards.
        untouched: Files that must still exist afterwards with the same bytes.
        started: Whether the failure happens after the MLflow child run started (so it must be FAILED).
        env: Environment changes for an in-process call (``None`` unsets the variable).
        deny_read: A file ``os.access`` must report unreadable (when chmod cannot, e.g. as root).
    """

    argv: list[str]
    mentions: tuple[str, ...]
    kind: str = "cli"
    absent: tuple[Path, ...] = ()
    untouched: tuple[Path, ...] = ()
    started: bool = False
    env: dict[str, str | None] = field(default_factory=dict)
    deny_read: Path | None = None


# ------------------------------------------------------------------------------------------- writers


def write_raw(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Write any array (2D, 4D, float with NaN) as NIfTI with nibabel, bypassing bench's checks."""
    affine = np.diag([*spacing[:3], *([1.0] * (3 - len(spacing[:3]))), 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))


def data_call(data: Path, *mentions: str) -> Call:
    return Call(["data", "--root", str(data), "--split", "paper"], mentions)


def run_call(ws: Workspace, data: Path, *overrides: str, mentions: tuple[str, ...], started: bool = False) -> Call:
    return Call(ws.overrides(data, "+experiment=table1/row5", *overrides), mentions, kind="run",
                absent=(ws.runs / "outputs",) if not started else (), started=started)


# --------------------------------------------------------------------------------------------- cases
# Each builder gets (tmp_path, data = a writable copy of the tiny cohort, workspace) and returns a Call.

Builder = Callable[[Path, Path, Workspace], Call]


def not_nifti(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).write_text("subject,age\nIBSR_01,37\n")
    return data_call(data, IMAGE, "cannot read image")


def truncated_gzip(tmp: Path, data: Path, ws: Workspace) -> Call:
    raw = (data / IMAGE).read_bytes()
    (data / IMAGE).write_bytes(raw[: len(raw) // 2])
    return data_call(data, IMAGE, "cannot read image")


def corrupt_gzip(tmp: Path, data: Path, ws: Workspace) -> Call:
    raw = bytearray((data / IMAGE).read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(255 - b for b in raw[middle : middle + 64])
    (data / IMAGE).write_bytes(bytes(raw))
    return data_call(data, IMAGE, "cannot read image")


def gzip_of_text(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).write_bytes(gzip.compress(b"not an image at all\n" * 50))
    return data_call(data, IMAGE, "cannot read image")


def empty_file(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / LABEL).write_bytes(b"")
    return data_call(data, LABEL, "empty")


def unreadable(tmp: Path, data: Path, ws: Workspace) -> Call:
    """chmod 000; as root (which reads anything) the permission check is emulated instead."""
    path = data / IMAGE
    path.chmod(0)
    call = data_call(data, IMAGE, "permission denied")
    if os.access(path, os.R_OK):
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        call.deny_read = path
    return call


def missing_seg(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / LABEL).unlink()
    return data_call(data, "IBSR_01_seg.nii.gz", "has no label file")


def missing_root(tmp: Path, data: Path, ws: Workspace) -> Call:
    return data_call(tmp / "no_such_dataset", "no_such_dataset", "does not exist")


def misnamed_folder(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / "Training_Set").rename(data / "training_set")
    return data_call(data, "training_set", "unknown folder")


def misnamed_file(tmp: Path, data: Path, ws: Workspace) -> Call:
    (data / IMAGE).rename(data / TRAIN / "IBSR_1.nii.gz")
    return data_call(data, TRAIN, "no image file IBSR_01.nii.gz", "IBSR_1.nii.gz")


def no_subjects(tmp: Path, data: Path, ws: Workspace) -> Call:
    empty = tmp / "empty_root"
    (empty / "notes").mkdir(parents=True)
    return data_call(empty, "empty_root", "no subjects found")


def duplicate_ids(tmp: Path, data: Path, ws: Workspace) -> Call:
    shutil.copytree(data / TRAIN, data / "Validation_Set" / "IBSR_01")
    return data_call(data, "IBSR_01", "duplicate subject id")


def _label(data: Path) -> Volume:
    return read_volume(data / LABEL)


def shape_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    label = _label(data)
    write_volume(Volume(label.array[:-4], label.spacing_mm), data / LABEL)
    return data_call(data, LABEL, "label shape (44, 32, 48) differs from image shape (48, 32, 48)")


def spacing_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    label = _label(data)
    write_volume(Volume(label.array, (1.0, 1.0, 1.0)), data / LABEL)
    return data_call(data, LABEL, "label spacing 1×1×1 mm differs from image spacing")


def image_2d(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = sitk.GetImageFromArray(np.full((32, 48), 100, dtype=np.int16))
    sitk.WriteImage(image, str(data / IMAGE))
    return data_call(data, IMAGE, "2D image")


def image_4d(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = read_volume(data / IMAGE)
    write_raw(data / IMAGE, np.stack([image.array, image.array], axis=-1), image.spacing_mm)
    return data_call(data, IMAGE, "4D image with 2 volumes")


def label_out_of_range(tmp: Path, data: Path, ws: Workspace) -> Call:
    label = _label(data)
    array = label.array.copy()
    array[20, 16, 20] = 7
    write_volume(label.with_array(array), data / LABEL)
    return data_call(data, LABEL, "label values outside {0, 1, 2, 3}: 7")


def _float_image_with(data: Path, value: float) -> None:
    image = read_volume(data / IMAGE)
    array = image.array.astype(np.float32)
    array[24, 16, 24] = value
    write_raw(data / IMAGE, array, image.spacing_mm)


def nan_intensity(tmp: Path, data: Path, ws: Workspace) -> Call:
    _float_image_with(data, np.nan)
    return data_call(data, IMAGE, "1 NaN and 0 Inf voxels")


def complex_image(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = nib.load(str(data / IMAGE))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj).astype(np.complex64), image.affine), str(data / IMAGE))
    return data_call(data, IMAGE, "complex-valued image")


def zero_voxel_size(tmp: Path, data: Path, ws: Workspace) -> Call:
    """pixdim[1] = 0 written into the header bytes (nibabel would write 1)."""
    raw = bytearray(gzip.decompress((data / IMAGE).read_bytes()))
    raw[80:84] = np.float32(0).tobytes()
    (data / IMAGE).write_bytes(gzip.compress(bytes(raw)))
    return data_call(data, IMAGE, "voxel size unknown", "pixdim[1:4]")


def inf_intensity(tmp: Path, data: Path, ws: Workspace) -> Call:
    _float_image_with(data, np.inf)
    return data_call(data, IMAGE, "0 NaN and 1 Inf voxels")


def all_zero(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = read_volume(data / IMAGE)
    write_volume(image.with_array(np.zeros_like(image.array)), data / IMAGE)
    return data_call(data, IMAGE, "all-zero")


# bench evaluate ------------------------------------------------------------------------------------


def _eval_folders(tmp: Path, data: Path) -> tuple[Path, Path, Path, Path]:
    pred_dir = tmp / "pred"
    pred_dir.mkdir()
    for case in ("IBSR_11", "IBSR_12"):
        shutil.copy(data / f"Validation_Set/{case}/{case}_seg.nii.gz", pred_dir / f"{case}.nii.gz")
    return pred_dir, data / "Validation_Set", tmp / "scores" / "table.csv", tmp / "scores" / "summary.json"


def eval_args(pred_dir: Path, ref_dir: Path, out: Path, summary: Path) -> list[str]:
    return ["evaluate", "--pred-dir", str(pred_dir), "--ref-dir", str(ref_dir), "--out", str(out),
            "--summary", str(summary)]


def eval_not_nifti(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    (pred_dir / "IBSR_12.nii.gz").write_bytes(b"\x00" * 1000)
    return Call(eval_args(pred_dir, ref_dir, out, summary), ("pred/IBSR_12.nii.gz", "cannot read image"),
                absent=(out, summary))


def eval_spacing_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    pred = read_volume(pred_dir / "IBSR_12.nii.gz")
    write_volume(Volume(pred.array, (2.0, 2.0, 2.0)), pred_dir / "IBSR_12.nii.gz")
    return Call(eval_args(pred_dir, ref_dir, out, summary), ("pred/IBSR_12.nii.gz", "spacing (2, 2, 2) mm"),
                absent=(out, summary))


def eval_shape_mismatch(tmp: Path, data: Path, ws: Workspace) -> Call:
    ref = read_volume(data / TEST_LABEL)
    pred = tmp / "IBSR_11.nii.gz"
    write_volume(Volume(ref.array[:, :-2], ref.spacing_mm), pred)
    return Call(["evaluate", "--pred", str(pred), "--ref", str(data / TEST_LABEL)],
                (str(pred), "shape (48, 30, 48)", TEST_LABEL))


def eval_labels_outside(tmp: Path, data: Path, ws: Workspace) -> Call:
    image = data / "Validation_Set/IBSR_11/IBSR_11.nii.gz"  # a T1 image passed as the prediction
    return Call(["evaluate", "--pred", str(image), "--ref", str(data / TEST_LABEL)],
                (str(image), "outside {0, 1, 2, 3}"))


def eval_missing_reference(tmp: Path, data: Path, ws: Workspace) -> Call:
    pred_dir, ref_dir, out, summary = _eval_folders(tmp, data)
    (ref_dir / "IBSR_12" / "IBSR_12_seg.nii.gz").unlink()
    return Call(eval_args(pred_dir, ref_dir, out, summary),
                ("predictions without a reference", "pred/IBSR_12.nii.gz"), absent=(out, summary))


def eval_missing_dir(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "scores" / "table.csv"
    return Call(["evaluate", "--pred-dir", str(tmp / "no_predictions"), "--ref-dir", str(data), "--out", str(out)],
                ("no_predictions", "does not exist"), absent=(out,))


# bench synth ---------------------------------------------------------------------------------------


def synth_zero_subjects(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "0"], ("--subjects", "0"), absent=(out,))


def synth_bad_spacing(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "1", "--spacing-scale", "-1"],
                ("spacing scale", "-1"), absent=(out,))


def synth_tiny_shape(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "synthetic"
    return Call(["synth", "--out", str(out), "--subjects", "1", "--shape", "4", "32", "48"],
                ("shape", "(4, 32, 48)"), absent=(out,))


def synth_foreign_folder(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\chapter{Intro}\n")
    return Call(["synth", "--out", str(out), "--subjects", "1", "--shape", "16", "16", "16"],
                (str(out), "not empty"), absent=(out / "synth.json", out / "Training_Set"),
                untouched=(out / "chapter1.tex",))


# bench report --------------------------------------------------------------------------------------


def _empty_store(ws: Workspace, *experiments: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ws.uri)  # creates the sqlite store
    for name in experiments:
        client.create_experiment(name)


def report_no_runs(tmp: Path, data: Path, ws: Workspace) -> Call:
    _empty_store(ws)
    return Call(["report", "--runs", str(ws.runs)], ("no MLflow experiment with brainbench runs",),
                absent=(ws.runs / "reports",))


def report_unknown_experiment(tmp: Path, data: Path, ws: Workspace) -> Call:
    _empty_store(ws, "table1-synthetic-smoke")
    return Call(["report", "--runs", str(ws.runs), "--experiment", "table1-nosuch"],
                ("no MLflow experiment named 'table1-nosuch'", "use one of: table1-synthetic-smoke"),
                absent=(ws.runs / "reports",))


def report_missing_store(tmp: Path, data: Path, ws: Workspace) -> Call:
    runs = tmp / "runz"  # a typo: no store may be created there
    return Call(["report", "--runs", str(runs)], (str(runs / "mlflow.db"), "no MLflow store"), absent=(runs,),
                env={"MLFLOW_TRACKING_URI": None})


# --tracking-uri / tracking.uri that MLflow cannot open ------------------------------------------------


def _dead_database() -> str:
    from stack_helpers import free_ports

    return f"postgresql://brain:secret@127.0.0.1:{free_ports(1)[0]}/mlflow"


DEAD_DATABASE = ("postgresql://brain:***@127.0.0.1:", "is unreachable")


def report_dead_database(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "reports"
    return Call(["report", "--tracking-uri", _dead_database(), "--out", str(out)], DEAD_DATABASE, absent=(out,))


def report_file_store(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "reports"
    return Call(["report", "--tracking-uri", f"file://{tmp}/mlruns", "--out", str(out)],
                ("plain file store", "sqlite:///"), absent=(out, tmp / "mlruns"))


def report_unknown_scheme(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "reports"
    return Call(["report", "--tracking-uri", "foo://bar", "--out", str(out)], ("'foo://bar'", "scheme 'foo'"),
                absent=(out,))


def report_missing_driver(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "reports"
    return Call(["report", "--tracking-uri", "mysql://brain@127.0.0.1/mlflow", "--out", str(out)],
                ("driver MySQLdb", "not installed"), absent=(out,))


def predict_dead_database(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "labels"
    return Call(["predict", "--model", "runs:/0123456789abcdef/model", "--input", str(data / IMAGE), "--out",
                 str(out), "--tracking-uri", _dead_database()], DEAD_DATABASE, absent=(out / "IBSR_01.nii.gz",))


def predict_unknown_model_scheme(tmp: Path, data: Path, ws: Workspace) -> Call:
    out = tmp / "labels"
    return Call(["predict", "--model", "s3://bucket/model", "--input", str(data / IMAGE), "--out", str(out)],
                ("'s3://bucket/model'", "scheme", "runs:/RUN_ID"), absent=(out,))


def register_dead_database(tmp: Path, data: Path, ws: Workspace) -> Call:
    return Call(["register", "0123456789abcdef", "brain", "--tracking-uri", _dead_database()], DEAD_DATABASE)


def ensemble_dead_database(tmp: Path, data: Path, ws: Workspace) -> Call:
    return Call(["ensemble", "--name", "both", "--runs", "0123456789abcdef", "fedcba9876543210",
                 "--tracking-uri", _dead_database()], DEAD_DATABASE)


def run_dead_database(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, f"tracking.uri={_dead_database()}", mentions=DEAD_DATABASE)


def run_file_store(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, f"tracking.uri=file://{tmp}/mlruns", mentions=("plain file store",))


# python -m bench.run -------------------------------------------------------------------------------


def run_missing_root(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, tmp / "no_such_dataset", mentions=("no_such_dataset", "data root does not exist"))


def run_bad_label(tmp: Path, data: Path, ws: Workspace) -> Call:
    label_out_of_range(tmp, data, ws)
    return run_call(ws, data, mentions=(LABEL, "outside {0, 1, 2, 3}"))


def run_patch_too_large(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "profile.patch_size=[64,64,64]", started=True,
                    mentions=("profile.patch_size=[64, 64, 64]", "larger than the preprocessed volume"))


def run_lr_zero(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "optimizer.lr=0", mentions=("optimizer.lr=0", "positive"))


def run_lr_negative(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "optimizer.lr=-0.1", mentions=("optimizer.lr=-0.1", "positive"))


def run_batch_zero(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "profile.batch_size=0", mentions=("profile.batch_size=0", "positive"))


def run_batch_negative(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "profile.batch_size=-4", mentions=("profile.batch_size=-4", "positive"))


def run_unknown_model_option(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "model=resnet", mentions=("model/resnet", "unet3d"))


def run_unknown_architecture(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "model.architecture=resnet", mentions=("model.architecture='resnet'", "unknown"))


def run_unknown_framework_option(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "framework=jax", mentions=("framework/jax", "torch"))


def run_unknown_framework_name(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "framework.name=jax", mentions=("framework='jax'", "unknown"))


def run_unknown_loss_option(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "loss=focal", mentions=("loss/focal", "dice_ce"))


def run_unknown_loss_name(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "loss.name=focal", mentions=("loss.name='focal'", "unknown"))


def run_sweep_unknown_row(tmp: Path, data: Path, ws: Workspace) -> Call:
    argv = ["--multirun", *ws.overrides(data, "+experiment=table1/row5,table1/row99")]
    return Call(argv, ("experiment/table1/row99",), kind="run", absent=(ws.runs / "outputs",))


def run_unknown_key(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "learning_rate=0.1", mentions=("learning_rate", "+learning_rate=0.1"))


CASES: dict[str, Builder] = {
    "not-nifti": not_nifti,
    "truncated-gzip": truncated_gzip,
    "corrupt-gzip": corrupt_gzip,
    "gzip-of-text": gzip_of_text,
    "empty-file": empty_file,
    "unreadable": unreadable,
    "missing-seg": missing_seg,
    "missing-root": missing_root,
    "misnamed-folder": misnamed_folder,
    "misnamed-file": misnamed_file,
    "no-subjects": no_subjects,
    "duplicate-ids": duplicate_ids,
    "shape-mismatch": shape_mismatch,
    "spacing-mismatch": spacing_mismatch,
    "2d-image": image_2d,
    "4d-image": image_4d,
    "label-out-of-range": label_out_of_range,
    "nan-intensity": nan_intensity,
    "inf-intensity": inf_intensity,
    "complex-image": complex_image,
    "zero-voxel-size": zero_voxel_size,
    "all-zero-image": all_zero,
    "evaluate-not-nifti": eval_not_nifti,
    "evaluate-spacing-mismatch": eval_spacing_mismatch,
    "evaluate-shape-mismatch": eval_shape_mismatch,
    "evaluate-labels-outside": eval_labels_outside,
    "evaluate-missing-reference": eval_missing_reference,
    "evaluate-missing-folder": eval_missing_dir,
    "synth-zero-subjects": synth_zero_subjects,
    "synth-bad-spacing": synth_bad_spacing,
    "synth-tiny-shape": synth_tiny_shape,
    "synth-foreign-folder": synth_foreign_folder,
    "report-no-runs": report_no_runs,
    "report-unknown-experiment": report_unknown_experiment,
    "report-missing-store": report_missing_store,
    "report-dead-database": report_dead_database,
    "report-file-store": report_file_store,
    "report-unknown-scheme": report_unknown_scheme,
    "report-missing-driver": report_missing_driver,
    "predict-dead-database": predict_dead_database,
    "predict-unknown-model-scheme": predict_unknown_model_scheme,
    "register-dead-database": register_dead_database,
    "ensemble-dead-database": ensemble_dead_database,
    "run-dead-database": run_dead_database,
    "run-file-store": run_file_store,
    "run-missing-root": run_missing_root,
    "run-bad-label": run_bad_label,
    "run-patch-too-large": run_patch_too_large,
    "run-lr-zero": run_lr_zero,
    "run-lr-negative": run_lr_negative,
    "run-batch-zero": run_batch_zero,
    "run-batch-negative": run_batch_negative,
    "run-unknown-model-option": run_unknown_model_option,
    "run-unknown-architecture": run_unknown_architecture,
    "run-unknown-framework-option": run_unknown_framework_option,
    "run-unknown-framework-name": run_unknown_framework_name,
    "run-unknown-loss-option": run_unknown_loss_option,
    "run-unknown-loss-name": run_unknown_loss_name,
    "run-unknown-key": run_unknown_key,
    "run-sweep-unknown-row": run_sweep_unknown_row,
}


def _invoke(call: Call, ws: Workspace, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    if call.kind == "run":
        done = ws.bench_run(call.argv, timeout=300)
        return done.returncode, done.stderr
    for key, value in call.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    if call.deny_read is not None:
        denied, access = call.deny_read, os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
            False if Path(p) == denied and mode & os.R_OK else access(p, mode, **kw)))
    capsys.readouterr()
    code = bench_main(call.argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_fails_cleanly(case: str, cohort_copy: Path, workspace: Workspace, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    call = CASES[case](tmp_path, cohort_copy, workspace)
    before = {p: p.read_bytes() for p in call.untouched}

    code, stderr = _invoke(call, workspace, capsys, monkeypatch)

    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, stderr
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    message = errors[0].removeprefix("error: ")
    for needle in call.mentions:
        assert needle in message, f"{needle!r} not in {message!r}"
    if call.kind == "cli":
        assert stderr.strip() == errors[0], "the error line is all a CLI command prints on stderr"
    for path in call.absent:
        assert not path.exists(), f"{path} was left behind"
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was changed"
    assert temp_files(tmp_path) == [], "temporary files were left behind"
    if call.kind == "run":
        children = workspace.runs_()
        assert [r.info.status for r in children] == (["FAILED"] if call.started else [])
        if call.started:
            assert children[0].data.tags["brainbench.error"] == message
            outputs = workspace.runs / "outputs"
            assert not list(outputs.rglob("*.*")), "a failed run left outputs"


# ---------------------------------------------------------------------------------- allowed oddities


def test_class_absent_from_reference_is_scored_by_the_empty_mask_rule(cohort_copy: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """No CSF in the reference: allowed. Both empty → dice 1, avd 0, distances 0; only the prediction has
    CSF → dice 0 and avd/distances inf (null in JSON); the rule is stated in summary.json."""
    ref = read_volume(cohort_copy / TEST_LABEL)
    no_csf = ref.array.copy()
    no_csf[no_csf == 1] = 2
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    write_volume(ref.with_array(no_csf), ref_dir / "IBSR_11_seg.nii.gz")
    write_volume(ref.with_array(no_csf), pred_dir / "IBSR_11.nii.gz")  # CSF absent from both
    write_volume(ref.with_array(ref.array), ref_dir.parent / "with_csf" / "IBSR_11.nii.gz")

    capsys.readouterr()
    assert bench_main(["evaluate", "--pred", str(pred_dir / "IBSR_11.nii.gz"),
                       "--ref", str(ref_dir / "IBSR_11_seg.nii.gz"), "--json"]) == 0
    both_empty = json.loads(capsys.readouterr().out)["CSF"]
    assert both_empty == {"dice": 1.0, "avd": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0}

    assert bench_main(["evaluate", "--pred", str(ref_dir.parent / "with_csf" / "IBSR_11.nii.gz"),
                       "--ref", str(ref_dir / "IBSR_11_seg.nii.gz"), "--json"]) == 0
    only_pred = json.loads(capsys.readouterr().out)["CSF"]
    assert only_pred == {"dice": 0.0, "avd": None, "hd": None, "hd95": None, "assd": None}

    out, summary = tmp_path / "scores.csv", tmp_path / "summary.json"
    assert bench_main(["evaluate", "--pred-dir", str(ref_dir.parent / "with_csf"), "--ref-dir", str(ref_dir),
                       "--out", str(out), "--summary", str(summary)]) == 0
    stated = json.loads(summary.read_text())
    assert stated["rules"]["empty_masks"] == EMPTY_MASK_RULE
    assert stated["n_nonfinite"]["CSF"] == {"dice": 0, "avd": 1, "hd": 1, "hd95": 1, "assd": 1}
    assert stated["mean"]["CSF"]["dice"] == 0.0 and stated["mean"]["CSF"]["hd"] is None
    assert stated["mean"]["WM"]["dice"] == 1.0 and stated["mean"]["GM"]["dice"] < 1.0


def test_class_absent_from_a_training_label_is_accepted(cohort_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = read_volume(cohort_copy / LABEL)
    array = label.array.copy()
    array[array == 1] = 0
    write_volume(label.with_array(array), cohort_copy / LABEL)
    assert bench_main(["data", "--root", str(cohort_copy), "--split", "paper"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("IBSR_01"))
    subject, split, _, _, bg, csf, gm, wm = row.split()  # id, split, shape, spacing, voxels per class
    assert (subject, split, csf) == ("IBSR_01", "train", "0") and min(int(bg), int(gm), int(wm)) > 0


def test_hydra_error_line_is_one_line() -> None:
    from hydra.errors import MissingConfigException

    exc = MissingConfigException(
        "In 'config': Could not find 'model/resnet'\n\nAvailable options in 'model':\n\tatlas\n\tunet3d\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf\n", missing_cfg_file="model/resnet")
    assert hydra_error_line(exc) == (
        "In 'config': Could not find 'model/resnet' (available options in 'model': atlas, unet3d)")


def test_failing_sweep_jobs_end_failed_and_the_sweep_goes_on(cohort_copy: Path, workspace: Workspace) -> None:
    """Two sweep jobs that both fail after their runs started: both FAILED (none RUNNING) with the error as a
    tag, one ``error:`` line per job, no traceback, exit code 2. (Failing joblib workers: test_sweep_resume.)"""
    done = workspace.bench_run(
        workspace.overrides(cohort_copy, "+experiment=table1/row5", "profile.patch_size=[64,64,64],[40,40,40]"),
        multirun=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 2 and "Traceback" not in done.stderr, done.stderr
    runs = workspace.runs_()
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    assert sorted("error: " + r.data.tags["brainbench.error"] for r in runs) == sorted(errors)


# ------------------------------------------------------------------------------------------- security


def test_torch_checkpoint_loading_runs_no_code(tmp_path: Path) -> None:
    """A weights.pt whose pickle runs a command when unpickled: adapters.load refuses it (DataError naming the
    file) and the command never runs; the same file loaded with plain pickle does run it (so the file is
    really malicious and the test can fail)."""
    torch = pytest.importorskip("torch")
    import adapters
    from bench.errors import DataError

    checkpoint = tmp_path / "checkpoint"
    adapters.build("unet3d", "torch", base_filters=2, depth=2).save(checkpoint)
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {sentinel}",)

    torch.save({"conv.weight": Payload()}, checkpoint / "weights.pt")
    with pytest.raises(DataError) as caught:
        adapters.load(checkpoint)
    assert str(checkpoint / "weights.pt") in caught.value.message
    assert not sentinel.exists()

    torch.load(checkpoint / "weights.pt", weights_only=False)  # what an unsafe loader would do
    assert sentinel.exists()


def test_no_unsafe_deserialisation_in_the_code() -> None:
    root = Path(__file__).resolve().parent.parent
    sources = {p: p.read_text() for folder in ("bench", "adapters") for p in (root / folder).rglob("*.py")}
    for path, text in sources.items():
        assert "weights_only=False" not in text, path
        assert "allow_pickle=True" not in text, path
        assert "safe_mode=False" not in text, path
        assert "pickle.load" not in text, path
    assert "weights_only=True" in sources[root / "adapters" / "torch" / "segmenter.py"]


def test_make_ui_binds_to_localhost() -> None:
    """``make ui`` serves MLflow on 127.0.0.1 unless HOST is set (dry run: nothing is started)."""
    import re
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    dry = subprocess.run(["make", "-n", "ui"], cwd=root, env=env, capture_output=True, text=True, check=True).stdout
    command = next(line for line in dry.splitlines() if "mlflow ui" in line)
    host = re.search(r"--host\s+(\S+)", command)
    assert host is not None, command
    expand = ["bash", "-c", f'printf %s "{host.group(1)}"']
    assert subprocess.run(expand, env=env, capture_output=True, text=True).stdout == "127.0.0.1"
    assert subprocess.run(expand, env={**env, "HOST": "0.0.0.0"}, capture_output=True, text=True).stdout == "0.0.0.0"
