"""MLflow tracking: the only module that imports mlflow.

Default store: sqlite at ``runs/mlflow.db`` with artifacts under ``runs/artifacts`` (set explicitly, so
MLflow never writes ``./mlruns``); ``MLFLOW_TRACKING_URI`` overrides the store. One experiment per sweep
name; under it one parent run per sweep and one child run per configuration, identified by its config
hash. A child that raises is marked FAILED with the error as a tag; a child left RUNNING by a killed
process is marked KILLED when the sweep is started again.

A tracking server (``http://host:port``, e.g. ``mlflow server`` on PostgreSQL) works the same way: it is
checked once when a Tracker opens (unreachable: one ``BenchError`` naming the URI), experiments get the
server's artifact root (workers need no shared disk), the file lock is for sqlite only and races between
workers are settled by keeping the oldest run. Transient HTTP errors are retried by MLflow's own client
with bounded defaults (``HTTP_RETRY_DEFAULTS``, overridable by the same environment variables).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.contract import EpochRecord
from bench.errors import BenchError, DataError
from bench.io import is_no_space, link_tree, no_space_error
from bench.privacy import Privacy
from bench.processes import interruption, is_live_child, pid_alive
from bench.redact import hide_password
from bench.tracking.calls import retry_call
from bench.tracking.server import is_server
from bench.tracking.store import check_store_uri, local_artifacts

DEFAULT_ROOT = Path("runs")
TAG_KIND = "brainbench.kind"
TAG_SWEEP = "brainbench.sweep"
TAG_HASH = "brainbench.config_hash"
TAG_PID = "brainbench.pid"
TAG_HOST = "brainbench.host"
TAG_ERROR = "brainbench.error"
TAG_CONVERGENCE = "brainbench.convergence"
"""How the fit ended: stopped_early, plateaued, still_improving (not converged) or no_training (atlas)."""
TAG_UNLEARNED = "brainbench.unlearned_classes"
"""Comma-separated classes whose validation Dice was still 0 at the end (empty when none)."""
PARENT_ID_TAG = "mlflow.parentRunId"
DESCRIPTION_TAG = "mlflow.note.content"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Opens the experiment in the UI's model-training view (MLflow 3 otherwise may guess GenAI)."""
T = TypeVar("T")
log = logging.getLogger(__name__)


def default_uri(root: Path = DEFAULT_ROOT) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else sqlite at ``<root>/mlflow.db`` (30 s lock timeout)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'mlflow.db').resolve()}?timeout=30"


def _oldest(runs: list[Any]) -> Any:
    """The run that won a creation race: the earliest started (run id breaks ties)."""
    return min(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested mapping to ``{"a.b.c": "value"}`` strings (lists as JSON) for MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = str(value)
    return out


@dataclass(frozen=True)
class FinishedRun:
    """A configuration that already FINISHED in this experiment."""

    run_id: str
    name: str


class Tracker:
    """An MLflow experiment for one sweep.

    Args:
        experiment: Experiment name (one per sweep name).
        uri: Tracking URI; ``None`` uses :func:`default_uri`.
        root: Folder of the default sqlite store, its lock file and artifacts (``<root>/artifacts``).
    """

    def __init__(self, experiment: str, uri: str | None = None, root: Path = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self.uri = uri or default_uri(self.root)
        self.server = is_server(self.uri)
        if hide_password(self.uri) != self.uri:  # MLflow prints "View run at <uri>/#/..." when a run ends
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        check_store_uri(self.uri)
        artifacts = (self.root / "artifacts").resolve()
        with self._lock():
            # MlflowClient opens the store at once, and a fresh sqlite store is created and migrated then:
            # two workers doing that together fail with "table ... already exists", so it happens under the lock.
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self._call(lambda: self.client.get_experiment_by_name(experiment))
            if found is None:
                location = None  # a server's own artifact root (served over HTTP: no shared disk needed)
                if not self.server:
                    artifacts.mkdir(parents=True, exist_ok=True)
                    location = (artifacts / experiment).as_uri()
                try:
                    self.experiment_id = self._call(
                        lambda: self.client.create_experiment(
                            experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                        )
                    )
                except MlflowException as exc:  # another worker created it first (no file lock on a server)
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    raced = self._call(lambda: self.client.get_experiment_by_name(experiment))
                    if raced is None:
                        raise
                    self.experiment_id = raced.experiment_id
            else:
                self.experiment_id = found.experiment_id
                if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # stores made before the tag
                    self._call(lambda: self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                                                  EXPERIMENT_KIND))
        self.experiment = experiment

    def _call(self, call: Callable[[], T]) -> T:
        return retry_call(call, where=self.uri)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """A file lock so parallel workers on one machine don't race creating the sqlite store, the experiment
        or a run (a server's workers may share no disk: they settle races by keeping the oldest run)."""
        if is_server(self.uri):
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".tracking.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _search(self, filter_string: str) -> list[Any]:
        return list(self._call(lambda: self.client.search_runs([self.experiment_id], filter_string, max_results=5000)))

    def parent_run(self, sweep: str, params: Mapping[str, str] | None = None) -> str:
        """The sweep's parent run id, created (and immediately terminated as FINISHED) when missing."""
        with self._lock():
            runs = self._search(f"tags.`{TAG_KIND}` = 'parent' and tags.`{TAG_SWEEP}` = '{sweep}'")
            if runs:
                return str(runs[0].info.run_id)
            run = self._call(
                lambda: self.client.create_run(
                    self.experiment_id, run_name=f"sweep:{sweep}", tags={TAG_KIND: "parent", TAG_SWEEP: sweep}
                )
            )
            if params:
                self._log_params(run.info.run_id, params)
            self._call(lambda: self.client.set_terminated(run.info.run_id, "FINISHED"))
            if self.server:  # without the lock another worker may have created one too: the oldest wins
                runs = self._search(f"tags.`{TAG_KIND}` = 'parent' and tags.`{TAG_SWEEP}` = '{sweep}'")
                winner = _oldest(runs) if runs else run
                if winner.info.run_id != run.info.run_id:
                    self._call(lambda: self.client.delete_run(run.info.run_id))
                return str(winner.info.run_id)
            return str(run.info.run_id)

    def finished_run(self, config_hash: str) -> FinishedRun | None:
        """The newest FINISHED child run with this config hash, if any."""
        return _newest_finished(self._search(_finished_with_hash(config_hash)))

    def reap_stale(self, config_hash: str | None = None) -> list[str]:
        """Mark RUNNING child runs whose process is gone as KILLED; return their ids.

        A run is stale when it was started on this host by a process id that no longer exists (a
        SIGKILLed worker), or on another host more than a day ago.
        """
        return [run.info.run_id for run in self._reap(config_hash, "process died while running")]

    def _reap(self, config_hash: str | None, why: str) -> list[Any]:
        """The stale runs (:meth:`reap_stale`), each marked KILLED with ``why`` as its error tag."""
        flt = "attributes.status = 'RUNNING'"
        if config_hash:
            flt += f" and tags.`{TAG_HASH}` = '{config_hash}'"
        reaped = []
        for run in self._search(flt):
            tags = run.data.tags
            pid = int(tags.get(TAG_PID, "0") or 0)
            same_host = tags.get(TAG_HOST) == socket.gethostname()
            if pid == os.getpid() and same_host:
                continue
            old = (time.time() * 1000 - (run.info.start_time or 0)) > 86_400_000
            if (same_host and not pid_alive(pid)) or (not same_host and old):
                run_id = run.info.run_id
                self._call(functools.partial(self.client.set_tag, run_id, TAG_ERROR, why))
                self._call(functools.partial(self.client.set_terminated, run_id, "KILLED"))
                reaped.append(run)
        return reaped

    def reap_stopped_workers(self, wait_s: float = 5.0) -> list[tuple[str, str]]:
        """After a stopped sweep: mark KILLED the runs this driver's worker processes left RUNNING.

        joblib ends its workers with SIGKILL when the driver is stopped, so they cannot end their own runs.
        This waits up to ``wait_s`` seconds for those children to be gone, then reaps (:meth:`reap_stale`).

        Returns:
            ``(run name, config hash)`` of each run it marked.
        """
        host = socket.gethostname()
        pids = {int(run.data.tags.get(TAG_PID, "0") or 0)
                for run in self._search("attributes.status = 'RUNNING'") if run.data.tags.get(TAG_HOST) == host}
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(is_live_child(pid) for pid in pids):
            time.sleep(0.2)
        reaped = self._reap(None, "the sweep was stopped, and its worker process with it")
        return [(run.info.run_name, run.data.tags.get(TAG_HASH, "")) for run in reaped]

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]
            self._call(functools.partial(self.client.log_batch, run_id, params=chunk))

    def start_child(
        self, parent_id: str, name: str, config_hash: str, params: Mapping[str, str], tags: Mapping[str, str],
        *, rerun_finished: bool = False, privacy: Privacy | None = None,
    ) -> ChildRun | None:
        """Create a RUNNING child run; use it as a context manager so it always ends FINISHED/FAILED/KILLED.

        Returns None, creating nothing, when a run with this hash is already RUNNING (a live process: dead
        ones are reaped first) or FINISHED (unless ``rerun_finished``). The check and the creation happen
        under the tracking lock, so two workers given the same configuration (say an atlas row swept over
        two frameworks, which do not apply to it) run it once. ``privacy`` filters everything the run sends,
        its params and tags first (``bench.privacy``).
        """
        with self._lock():
            self.reap_stale(config_hash)
            active = ("RUNNING",) if rerun_finished else ("RUNNING", "FINISHED")
            if any(run.info.status in active for run in self._search(f"tags.`{TAG_HASH}` = '{config_hash}'")):
                return None
            child = self._create_child(parent_id, name, config_hash, params, tags, privacy or Privacy())
            if self.server:  # no lock: another worker may have claimed this hash at the same time
                rivals = [run for run in self._search(f"tags.`{TAG_HASH}` = '{config_hash}'")
                          if run.info.status in active]
                if rivals and _oldest(rivals).info.run_id != child.run_id:
                    self._call(lambda: self.client.delete_run(child.run_id))
                    return None
            return child

    def _create_child(
        self, parent_id: str, name: str, config_hash: str, params: Mapping[str, str], tags: Mapping[str, str],
        privacy: Privacy,
    ) -> ChildRun:
        all_tags = {
            PARENT_ID_TAG: parent_id,
            TAG_KIND: "child",
            TAG_HASH: config_hash,
            TAG_PID: str(os.getpid()),
            TAG_HOST: socket.gethostname(),
            **{k: privacy.text(str(v)) for k, v in tags.items()},
        }
        run = self._call(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags))
        child = ChildRun(self.client, run.info.run_id, privacy)
        self._log_params(child.run_id, {k: privacy.text(str(v)) for k, v in params.items()})
        return child

    def runs_frame(self, status: str | None = "FINISHED") -> pd.DataFrame:
        """Child runs of this experiment as a DataFrame (params, tags, metrics flattened)."""
        flt = f"tags.`{TAG_KIND}` = 'child'"
        if status:
            flt += f" and attributes.status = '{status}'"
        rows = []
        for run in self._search(flt):
            row: dict[str, Any] = {"run_id": run.info.run_id, "status": run.info.status,
                                   "run_name": run.info.run_name, "start_time": run.info.start_time}
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def download_artifact(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self._call(lambda: self.client.download_artifacts(run_id, path, str(dst))))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call(lambda: self.client.log_artifact(run_id, str(path), artifact_path))


METRIC_NAME_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /:]")


def metric_name(name: str) -> str:
    """``name`` as MLflow accepts it: a character it refuses (a label named ``GM+WM``) becomes ``_``."""
    return METRIC_NAME_UNSAFE.sub("_", name)


class ChildRun:
    """One configuration's MLflow run; also a ``RunLogger`` for adapters' per-epoch records. Whatever it sends
    (tags, dataset inputs, tables, artifacts, its error) passes ``privacy`` first (``bench.privacy``)."""

    def __init__(self, client: MlflowClient, run_id: str, privacy: Privacy | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.privacy = privacy or Privacy()

    def _call(self, call: Callable[[], T]) -> T:
        return retry_call(call, where=self.client.tracking_uri)

    def __enter__(self) -> ChildRun:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            self.end("FINISHED")
        else:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            if isinstance(exc, BenchError):
                message = exc.message
            elif isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or bench.processes.Terminated
                message = interruption(exc)[0]
            else:
                message = hide_password(f"{type(exc).__name__}: {exc}")
            message = self.privacy.text(message)
            with contextlib.suppress(Exception):
                self._call(lambda: self.client.set_tag(self.run_id, TAG_ERROR, message[:5000]))
            try:
                self.end(status)
            except BenchError as unended:  # a full store: the run's own error comes first
                log.warning("run %s could not be marked %s (%s); the next start marks it KILLED", self.run_id,
                            status, unended.message)
        return False

    def end(self, status: str) -> None:
        RunStatus.from_string(status)
        self._call(lambda: self.client.set_terminated(self.run_id, status))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step or 0) for k, v in metrics.items() if v is not None
                 and math.isfinite(float(v))]
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            self._call(functools.partial(self.client.log_batch, self.run_id, metrics=chunk))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, self.privacy.text(str(v))[:5000]) for k, v in tags.items()]
        self._call(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_epoch(self, record: EpochRecord) -> None:
        metrics: dict[str, float] = {"train_loss": record.train_loss, "lr": record.lr,
                                     "epoch_seconds": record.seconds, "patches_per_s": record.patches_per_s}
        if record.val_loss is not None:
            metrics["val_loss"] = record.val_loss
        if record.skipped_steps:
            metrics["skipped_steps_epoch"] = float(record.skipped_steps)
        for name, value in (record.val_dice or {}).items():
            metrics[f"val_dice_{name}"] = value
        self.log_metrics(metrics, step=record.epoch)

    def log_dataset(self, frame: pd.DataFrame, name: str, source: str, digest: str, context: str) -> None:
        """Record ``frame`` (one row per subject) as the run's MLflow dataset input used for ``context``."""
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # a local path matches two registered local sources; either is right
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_pandas(self.privacy.frame(frame), source=self.privacy.text(str(Path(source).resolve())),
                                  name=self.privacy.text(name), digest=digest)
        tags = [InputTag(key="mlflow.data.context", value=context)]
        entity = DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)
        self._call(lambda: self.client.log_inputs(self.run_id, datasets=[entity]))

    def log_table(self, frame: pd.DataFrame, artifact_file: str) -> None:
        frame = self.privacy.frame(frame)
        self._call(lambda: mlflow.MlflowClient(self.client.tracking_uri).log_table(self.run_id, frame, artifact_file))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log one file; on a local artifact store it is hard-linked, not copied (see :func:`local_artifacts`).
        An image that ``privacy`` keeps back is not sent; a text file it filters is sent as a filtered copy."""
        path = Path(path)
        if not self.privacy.sends(path):
            return
        if self.privacy.rewrites(path):
            with tempfile.TemporaryDirectory() as scratch:
                self._send(self.privacy.copy(path, Path(scratch)), artifact_path)
            return
        self._send(path, artifact_path)

    def _send(self, path: Path, artifact_path: str | None) -> None:
        local = self._local_artifacts(artifact_path)
        if local is not None:
            _link(path, local / Path(path).name)
        else:
            self._call(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        """Log a folder's files; hard-linked on a local artifact store (file by file through ``privacy`` when on)."""
        if self.privacy.active:
            for path in sorted(Path(directory).rglob("*")):
                if path.is_file():
                    parent = path.relative_to(directory).parent.as_posix()
                    within = "/".join(p for p in (artifact_path or "", "" if parent == "." else parent) if p)
                    self.log_artifact(path, within or None)
            return
        local = self._local_artifacts(artifact_path)
        if local is not None:
            _link(directory, local)
        else:
            self._call(lambda: self.client.log_artifacts(self.run_id, str(directory), artifact_path))

    def _local_artifacts(self, artifact_path: str | None) -> Path | None:
        if not hasattr(self, "_artifact_uri"):
            self._artifact_uri = str(self._call(lambda: self.client.get_run(self.run_id)).info.artifact_uri)
        root = local_artifacts(self._artifact_uri)
        return None if root is None else root / (artifact_path or "")


def _link(source: Path, target: Path) -> None:
    """:func:`bench.io.link_tree` into a local artifact store (copied when on another disk); a full disk is one
    ``DataError`` naming the file."""
    try:
        link_tree(source, target)
    except OSError as exc:
        if is_no_space(exc, target):
            raise no_space_error(exc, target) from exc
        raise


def existing_store(uri: str | None = None, root: Path = DEFAULT_ROOT) -> str:
    """The tracking URI to read from, like :func:`default_uri` but creating nothing.

    Raises:
        DataError: The URI is a sqlite store whose file does not exist (a reader would create an empty one).
    """
    uri = (
        uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{(root / 'mlflow.db').resolve()}?timeout=30"
    )
    check_store_uri(uri)
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if not database.is_file():
            raise DataError(
                "no MLflow store here (nothing has been run with these settings)",
                path=database,
                fix="pass --runs <the paths.runs of your sweep> or --tracking-uri",
            )
    return uri


def lookup_finished_run(uri: str, experiment: str, config_hash: str) -> FinishedRun | None:
    """The FINISHED run with this config hash in ``experiment`` (read only: creates no experiment or store)."""
    client = MlflowClient(tracking_uri=uri)
    found = retry_call(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        return None
    return _newest_finished(retry_call(lambda: client.search_runs([found.experiment_id], _finished_with_hash(config_hash))))


def _finished_with_hash(config_hash: str) -> str:
    """MLflow search filter: FINISHED runs tagged with this config hash."""
    return f"tags.`{TAG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED'"


def _newest_finished(runs: list[Any]) -> FinishedRun | None:
    """The most recently started of ``runs`` as a FinishedRun (None when empty)."""
    if not runs:
        return None
    newest = max(runs, key=lambda run: run.info.start_time)
    return FinishedRun(run_id=newest.info.run_id, name=newest.info.run_name)


def experiment_names(uri: str) -> list[str]:
    """Names of the experiments in a tracking store (without MLflow's empty ``Default``)."""
    client = MlflowClient(tracking_uri=uri)
    return sorted(e.name for e in retry_call(lambda: client.search_experiments()) if e.name != "Default")


def latest_experiment(uri: str | None = None, root: Path = DEFAULT_ROOT) -> str | None:
    """Name of the experiment whose brainbench child run started most recently (None if there is none)."""
    client = MlflowClient(tracking_uri=uri or default_uri(root))
    experiments = retry_call(lambda: client.search_experiments())
    best: tuple[int, str] | None = None
    for exp in experiments:
        runs = retry_call(functools.partial(client.search_runs, [exp.experiment_id], f"tags.`{TAG_KIND}` = 'child'",
                                        max_results=1, order_by=["attributes.start_time DESC"]))
        if runs and (best is None or runs[0].info.start_time > best[0]):
            best = (runs[0].info.start_time, exp.name)
    return None if best is None else best[1]
