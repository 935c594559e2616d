"""``bench ensemble`` of runs trained with the privacy switches: it reads the members' own (unfiltered) outputs for
their subjects' files, sends no image, absolute path or subject id, and records the strictest of its members'
switches."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_SUBJECTS, Workspace, mlflow_runs
from test_configs import compose_cfg
from test_privacy import PRIVATE

from bench.cli import main as bench_main
from bench.config import run_spec_from_config
from bench.data.synth import SUBJECT_ORDER
from bench.predict.members import strictest
from bench.privacy import SALT_FILE, hashed_id

BUDGET = ("profile.epochs=1", "profile.steps_per_epoch=1", "profile.batch_size=2", "profile.patches_per_epoch=2",
          "profile.val_batches=1", "inference.batch_size=2", "inference.overlap=0")
TEST_IDS = ("IBSR_11", "IBSR_12")
PRIVATE_PARAMS = {"tracking.log_images": "False", "tracking.log_paths": "False", "tracking.hash_subject_ids": "True"}


@dataclass
class Members:
    """Two runs trained with the three switches on (seeds 0 and 1) and one with none (seed 2)."""

    ws: Workspace
    cohort: Path
    private: list[str]
    public: str


@pytest.fixture(scope="module")
def members(tiny_cohort: Path, empty_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Members:
    """The three members, trained in this process (``bench.experiment.run``, as a job of ``bench.run`` does)."""
    from bench.experiment import run

    root = tmp_path_factory.mktemp("ensemble-privacy")
    runs = root / "runs"
    runs.mkdir()
    shutil.copy(empty_store, runs / "mlflow.db")
    ws = Workspace(root=root, runs=runs)
    paths = [a for a in ws.overrides(tiny_cohort, *BUDGET) if not a.startswith("hydra.")]
    by_seed = {}
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "BENCH_"))]:
            patch.delenv(key)
        patch.setenv("MLFLOW_TRACKING_URI", ws.uri)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        patch.chdir(root)
        for seed, switches in ((0, PRIVATE), (1, PRIVATE), (2, ())):
            done = run(run_spec_from_config(compose_cfg([*paths, *switches, f"seed={seed}"])))
            assert done.status == "finished" and done.run_id, done
            by_seed[seed] = done.run_id
    return Members(ws, tiny_cohort, [by_seed[0], by_seed[1]], by_seed[2])


@pytest.fixture
def env(members: Members, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Members:
    """The members' store as this test's MLflow store; the working folder a fresh ``tmp_path``."""
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "BENCH_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", members.ws.uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.chdir(tmp_path)
    return members


def _ensemble(env: Members, name: str, *run_ids: str, extra: tuple[str, ...] = ()) -> int:
    return bench_main(["ensemble", "--runs", *run_ids, "--name", name, "--runs-dir", str(env.ws.runs), *extra])


def _stored(runs: Path, run_id: str) -> tuple[list[bytes], list[str]]:
    """What the store holds of ``run_id``: its rows in every table of the database (as text), and each of its
    artifacts' bytes and name."""
    with contextlib.closing(sqlite3.connect(runs / "mlflow.db")) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type = 'table'")
                  if "run_uuid" in [c[1] for c in db.execute(f"pragma table_info({t})")]]
        rows = [repr(row).encode() for t in tables
                for row in db.execute(f"select * from {t} where run_uuid = ?", (run_id,))]
    files = [p for p in (runs / "artifacts").rglob("*") if p.is_file() and run_id in p.parts]
    return [*rows, *(p.read_bytes() for p in files)], [str(p.relative_to(runs)) for p in files]


def _assert_sends_nothing_private(env: Members, name: str) -> Any:
    """The ensemble run ``name`` FINISHED, records the switches on, and its rows and artifacts hold no image, no
    path of the data and no subject id; its local outputs hold everything."""
    (run,) = [r for r in mlflow_runs(env.ws.uri) if r.data.tags["architecture"] == f"ensemble:{name}"]
    assert run.info.status == "FINISHED"
    assert {k: v for k, v in run.data.params.items() if k.startswith("tracking.")} == PRIVATE_PARAMS
    blobs, names = _stored(env.ws.runs, run.info.run_id)
    assert any(n.endswith("summary.json") for n in names) and any(n.endswith("metrics.csv") for n in names)
    assert not [n for n in names if n.endswith((".nii.gz", ".png"))], names
    assert len(blobs) > len(names) + 5, "no database row of the run was found"
    for secret in (str(env.cohort), str(env.cohort.resolve()), *SUBJECT_ORDER[:TINY_SUBJECTS]):
        assert not any(secret.encode() in blob for blob in blobs), f"{secret!r} reached the store"
        assert not any(secret in name for name in names), f"{secret!r} names a stored file"
    salt = (env.ws.runs / SALT_FILE).read_text().strip()
    stored = json.loads(next(b for b, n in zip(blobs[-len(names):], names, strict=True)
                             if n.endswith("summary.json")))
    assert sorted(stored["run"]["test_subjects"]) == sorted(hashed_id(s, salt) for s in TEST_IDS)  # pairs in reports
    out = next((env.ws.runs / "outputs").glob(f"*/ensemble-{name}-*"))
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"{s}.nii.gz" for s in TEST_IDS]
    assert json.loads((out / "summary.json").read_text())["run"]["test_subjects"] == list(TEST_IDS)
    return run


def test_the_strictest_member_decides_what_the_ensemble_sends() -> None:
    private, public = {"params": PRIVATE_PARAMS}, {"params": {}}  # a run made before the switches were recorded
    images = {"params": {"tracking.log_images": "False", "tracking.log_paths": "True"}}
    on = {"log_images": False, "log_paths": False, "hash_subject_ids": True}
    assert strictest([private, public]) == strictest([public, private]) == on
    assert strictest([public, public]) == {"log_images": True, "log_paths": True, "hash_subject_ids": False}
    assert strictest([public, images]) == {"log_images": False, "log_paths": True, "hash_subject_ids": False}


def test_ensemble_of_private_members_sends_no_image_path_or_id(env: Members) -> None:
    assert _ensemble(env, "private", *env.private) == 0
    _assert_sends_nothing_private(env, "private")


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    return line


def test_a_member_without_its_outputs_is_read_against_its_data_root(env: Members, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run_ids = [env.private[1], env.public]  # and one member sent everything: the strictest wins
    (own,) = (env.ws.runs / "outputs").glob("*/*-seed1-*")
    away = own.with_name("elsewhere")
    own.rename(away)  # the member ran on another machine: only the store's filtered summary is here
    try:
        assert _ensemble(env, "mixed", *run_ids) == 2
        error = _error(capsys)
        assert f"run {env.private[1]}" in error and "--data-root" in error, error
        monkeypatch.setenv("BENCH_ID_SALT", "another")  # ids hashed with another salt match none of the data root's
        assert _ensemble(env, "mixed", *run_ids, extra=("--data-root", str(env.cohort))) == 2
        assert "none of --data-root's subjects" in _error(capsys)
        assert not [r for r in mlflow_runs(env.ws.uri) if r.data.tags["architecture"] == "ensemble:mixed"]
        monkeypatch.delenv("BENCH_ID_SALT")
        assert _ensemble(env, "mixed", *run_ids, extra=("--data-root", str(env.cohort))) == 0
    finally:
        away.rename(own)
    _assert_sends_nothing_private(env, "mixed")


def test_another_salt_than_the_members_is_refused(env: Members, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_ID_SALT", "another")  # the ensemble's ids would not pair with its members'
    assert _ensemble(env, "salted", *env.private) == 2
    assert "hashed its subject ids with another salt" in _error(capsys)
    assert not [r for r in mlflow_runs(env.ws.uri) if r.data.tags["architecture"] == "ensemble:salted"]
