"""Bad tracking URIs and bad configs: ``bench report``, ``predict``, ``register`` and ``ensemble`` with a store
MLflow cannot open, and ``python -m bench.run`` with bad data, settings or sweeps: exit code 2, one
``error:`` line, no MLflow run left RUNNING (issue 5). Harness: ``bad_input.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input import (
    IMAGE,
    LABEL,
    Builder,
    Call,
    assert_fails_cleanly,
    run_call,
    write_label_out_of_range,
)
from conftest import Workspace

from bench.sweeps import hydra_error_line

# bench report --------------------------------------------------------------------------------------


def _empty_store(ws: Workspace, *experiments: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ws.uri)  # creates the sqlite store
    for name in experiments:
        client.create_experiment(name)


def report_no_runs(tmp: Path, data: Path, ws: Workspace) -> Call:
    _empty_store(ws)
    return Call(["report", "--runs-dir", str(ws.runs)], ("no MLflow experiment with brainbench runs",),
                absent=(ws.runs / "reports",))


def report_unknown_experiment(tmp: Path, data: Path, ws: Workspace) -> Call:
    _empty_store(ws, "table1-synthetic-smoke")
    return Call(["report", "--runs-dir", str(ws.runs), "--experiment", "table1-nosuch"],
                ("no MLflow experiment named 'table1-nosuch'", "use one of: table1-synthetic-smoke"),
                absent=(ws.runs / "reports",))


def report_missing_store(tmp: Path, data: Path, ws: Workspace) -> Call:
    runs = tmp / "runz"  # a typo: no store may be created there
    return Call(["report", "--runs-dir", str(runs)], (str(runs / "mlflow.db"), "no MLflow store"), absent=(runs,),
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
    write_label_out_of_range(data)
    return run_call(ws, data, mentions=(LABEL, "outside {0, 1, 2, 3}"))


def run_patch_too_large(tmp: Path, data: Path, ws: Workspace) -> Call:
    return run_call(ws, data, "profile.patch_size=[64,64,64]", started=True,
                    mentions=("profile.patch_size=[64, 64, 64]", "larger than the preprocessed volume"))


def run_cuda_without_gpu(tmp: Path, data: Path, ws: Workspace) -> Call:
    call = run_call(ws, data, "profile.device=cuda", mentions=("profile.device=cuda", "no usable NVIDIA GPU"))
    call.env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, on any machine
    return call


def run_sweep_unknown_row(tmp: Path, data: Path, ws: Workspace) -> Call:
    argv = ["--multirun", *ws.overrides(data, "+experiment=table1/row5,table1/row99")]
    return Call(argv, ("experiment/table1/row99",), kind="run", absent=(ws.runs / "outputs",))


# One bad setting each, on top of row 5: (override, what the error line must name).
BAD_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "run-lr-zero": ("optimizer.lr=0", ("optimizer.lr=0", "positive")),
    "run-lr-negative": ("optimizer.lr=-0.1", ("optimizer.lr=-0.1", "positive")),
    "run-batch-zero": ("profile.batch_size=0", ("profile.batch_size=0", "positive")),
    "run-batch-negative": ("profile.batch_size=-4", ("profile.batch_size=-4", "positive")),
    "run-unknown-model-option": ("model=resnet", ("model/resnet", "unet3d")),
    "run-unknown-architecture": ("model.architecture=resnet", ("model.architecture='resnet'", "unknown")),
    "run-unknown-framework-option": ("framework=jax", ("framework/jax", "torch")),
    "run-unknown-framework-name": ("framework.name=jax", ("framework='jax'", "unknown")),
    "run-unknown-loss-option": ("loss=focal", ("loss/focal", "dice_ce")),
    "run-unknown-loss-name": ("loss.name=focal", ("loss.name='focal'", "unknown")),
    "run-unknown-key": ("learning_rate=0.1", ("learning_rate", "+learning_rate=0.1")),
    "run-unknown-device": ("profile.device=gpu", ("profile.device='gpu'", "auto, cpu, cuda")),
}


def bad_setting(override: str, mentions: tuple[str, ...]) -> Builder:
    """A case that runs row 5 with ``override`` and expects an error line naming ``mentions``."""
    def build(tmp: Path, data: Path, ws: Workspace) -> Call:
        return run_call(ws, data, override, mentions=mentions)
    return build


CASES: dict[str, Builder] = {
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
    "run-cuda-without-gpu": run_cuda_without_gpu,
    **{name: bad_setting(*case) for name, case in BAD_SETTINGS.items()},
    "run-sweep-unknown-row": run_sweep_unknown_row,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_fails_cleanly(case: str, cohort_copy: Path, workspace: Workspace, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert_fails_cleanly(CASES[case](tmp_path, cohort_copy, workspace), workspace, tmp_path, capsys, monkeypatch)


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

