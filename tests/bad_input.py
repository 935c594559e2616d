"""The harness of the bad-input tests (``test_reliability*.py``): a :class:`Call` says how to run one bad case
and what to expect; :func:`assert_fails_cleanly` runs it and checks exit code 2, one ``error:`` line naming
the file or setting, no traceback, no half-written output and no MLflow run left RUNNING (issue 5).

A case runs ``bench ...`` in-process through ``bench.cli.main``, or ``python -m bench.run`` in a subprocess.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import Workspace, temp_files

from bench.cli import main as bench_main
from bench.io import read_volume, write_volume

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
        env: Environment changes for the call (``None`` unsets the variable).
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


def write_label_out_of_range(data: Path) -> None:
    """Give IBSR_01's label one voxel of class 7 (outside {0, 1, 2, 3})."""
    label = read_volume(data / LABEL)
    array = label.array.copy()
    array[20, 16, 20] = 7
    write_volume(label.with_array(array), data / LABEL)


def data_call(data: Path, *mentions: str) -> Call:
    return Call(["data", "--root", str(data), "--split", "paper"], mentions)


def run_call(ws: Workspace, data: Path, *overrides: str, mentions: tuple[str, ...], started: bool = False) -> Call:
    return Call(ws.overrides(data, "+experiment=table1/row5", *overrides), mentions, kind="run",
                absent=(ws.runs / "outputs",) if not started else (), started=started)


# --------------------------------------------------------------------------------------------- cases
# Each builder gets (tmp_path, data = a writable copy of the tiny cohort, workspace) and returns a Call.

Builder = Callable[[Path, Path, Workspace], Call]


def _invoke(call: Call, ws: Workspace, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    if call.kind == "run":
        env = {**ws.env, **{key: value for key, value in call.env.items() if value is not None}}
        for key in (key for key, value in call.env.items() if value is None):
            env.pop(key, None)
        done = ws.bench_run(call.argv, timeout=300, env=env)
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


def assert_fails_cleanly(call: Call, workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``call`` and check it failed cleanly: exit 2, one ``error:`` line with every ``call.mentions``,
    nothing left behind, ``call.untouched`` unchanged, and the MLflow child run FAILED only if it started."""
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

