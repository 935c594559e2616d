"""Shared fixtures: a tiny synthetic cohort, an isolated runs folder with its own MLflow store, and helpers
to run ``python -m bench.run`` in a subprocess and read the MLflow store it wrote."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TINY_SHAPE = (48, 32, 48)
TINY_SPACING_SCALE = 4.5
TINY_SUBJECTS = 7  # the first 7 of SUBJECT_ORDER cover every split of the paper split
TEMP_FILE_ALLOWED = {".tracking.lock"}
LONGEST_MODULES = ("test_profiles.py", "test_recipe.py", "test_predict.py", "test_sweep_resume.py", "test_any_dataset.py")
"""Modules whose end-to-end runs take a minute or more (``--durations``): collected first, so that with
``make test``'s ``-n 2 --dist loadfile --no-loadscope-reorder`` (keep this order; xdist's default puts the
modules with the most tests first) none of them is left to run alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`LONGEST_MODULES` to the front, keeping every other order as collected."""
    items.sort(key=lambda item: item.path.name not in LONGEST_MODULES)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-subject synthetic cohort on a 48×32×48 grid (course layout; read-only: copy it to change it).

    Paper split: train IBSR_01, IBSR_03; val IBSR_07, IBSR_16; test IBSR_11, IBSR_12; predict IBSR_02.
    """
    from bench.data.synth import write_cohort

    root = tmp_path_factory.mktemp("cohort") / "data"
    write_cohort(root, TINY_SUBJECTS, seed=0, shape=TINY_SHAPE, spacing_scale=TINY_SPACING_SCALE)
    return root


@pytest.fixture
def cohort_copy(tiny_cohort: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny cohort under ``tmp_path/data``."""
    return Path(shutil.copytree(tiny_cohort, tmp_path / "data"))


@dataclass
class Workspace:
    """An isolated folder for one test: ``runs/`` (MLflow sqlite store, cache, outputs) and its environment.

    Attributes:
        root: The test's folder (the working directory of subprocesses).
        runs: ``root/runs``: ``paths.runs``; the store is ``runs/mlflow.db``.
        env: Environment for subprocesses (``MLFLOW_TRACKING_URI`` pointing at the store, one BLAS thread).
    """

    root: Path
    runs: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.runs / 'mlflow.db'}?timeout=30"

    def overrides(self, data: Path, *extra: str) -> list[str]:
        """Hydra overrides for a smoke run on ``data`` with every output inside this workspace."""
        return [
            "profile=smoke",
            f"data.root={data}",
            f"paths.runs={self.runs}",
            f"paths.cache={self.runs / 'cache'}",
            f"paths.outputs={self.runs / 'outputs'}",
            f"hydra.run.dir={self.runs / 'hydra' / 'run'}",
            f"hydra.sweep.dir={self.runs / 'hydra' / 'multirun'}",
            *extra,
        ]

    def bench_run(self, args: Sequence[str], *, timeout: float = 600, multirun: bool = False,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m bench.run [--multirun] args`` to completion and capture its output."""
        cmd = [PYTHON, "-m", "bench.run", *(["--multirun"] if multirun else []), *args]
        return subprocess.run(cmd, cwd=self.root, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def popen_bench_run(self, args: Sequence[str], *, multirun: bool = False, log: Path | None = None,
                        env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``python -m bench.run`` in its own process group (so it can be killed as a whole)."""
        cmd = [PYTHON, "-m", "bench.run", *(["--multirun"] if multirun else []), *args]
        out = open(log or self.root / "bench_run.log", "ab")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(cmd, cwd=self.root, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def runs_(self, kind: str | None = "child") -> list[Any]:
        """Every MLflow run in the store (of every experiment), optionally only brainbench children."""
        return mlflow_runs(self.uri, kind)


def mlflow_runs(uri: str, kind: str | None = "child") -> list[Any]:
    """All runs of all experiments in a tracking store (``kind``: the ``brainbench.kind`` tag, or None)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///").split("?")[0]).is_file():
        return []  # no store was created (opening it would create one)
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        return []
    flt = f"tags.`brainbench.kind` = '{kind}'" if kind else ""
    return list(client.search_runs(ids, flt, run_view_type=ViewType.ALL, max_results=5000))


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session`` and all of its children; reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def temp_files(root: Path) -> list[Path]:
    """Temporary names that atomic writers use and that must never survive: hidden files
    (``.<name>.<random>[.tmp]``) other than the tracking lock, and unfinished run folders (``.<run>.partial``).
    Hidden folders (Hydra's ``.hydra``, the report's ``.artifacts`` download cache) are not temporary."""
    found = []
    for path in root.rglob(".*"):
        if path.name in TEMP_FILE_ALLOWED or ".hydra" in path.parts:
            continue
        if path.is_file() or path.name.endswith(".partial"):
            found.append(path)
    return sorted(found)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow sqlite store, made once: creating one takes seconds."""
    from mlflow.tracking import MlflowClient

    database = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Iterator[Workspace]:
    """An isolated runs folder whose MLflow store (``runs/mlflow.db``, a copy of an empty store) is also set
    as ``MLFLOW_TRACKING_URI``; delete ``runs/mlflow.db`` to test store creation."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(empty_store, runs / "mlflow.db")
    ws = Workspace(root=tmp_path, runs=runs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "BENCH_"))}
    env.update(MLFLOW_TRACKING_URI=ws.uri, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    ws.env = env
    for key in [k for k in os.environ if k.startswith(("MLFLOW_", "BENCH_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", ws.uri)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository (e.g. ./mlruns, ./runs)
    yield ws
