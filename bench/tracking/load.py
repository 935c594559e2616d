"""The MLflow side of the tracking load test (``benchmarks.tracking_load``): one client's session and what the
server holds afterwards. Credentials and the server's certificate come from the environment, as for any client
(``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``; ``bench stack env``).

Example:
    >>> experiment = new_experiment(uri, "load-k4")                              # doctest: +SKIP
    >>> result = client_session(uri, experiment, "c0", epochs=20, metrics=5, deadline=time.monotonic() + 300)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# MLflow's telemetry sets and unsets an environment variable while other threads copy os.environ (a KeyError
# '_MLFLOW_TELEMETRY_SESSION_ID' in a concurrent create_run, MLflow 3.17); the run links it prints are noise here
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bench.tracking.calls import retry_call

ARTIFACT_BYTES = 4096
"""Size of the artifact each client logs (bytes)."""
ARTIFACT_NAME = "load.txt"


@dataclass
class ClientResult:
    """What one client did: ``log_s`` the seconds of each metric-logging call (one ``log_batch`` per epoch),
    ``calls`` the API calls it made (create, one per epoch, the artifact, terminate), ``error`` why it stopped
    early (None: it finished)."""

    name: str
    log_s: list[float] = field(default_factory=list)
    calls: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RunView:
    """A run as the server holds it: name, status, each metric's logged steps, artifact names."""

    name: str
    status: str
    steps: dict[str, list[int]]
    artifacts: tuple[str, ...]


def metric_names(count: int) -> list[str]:
    return [f"m{i}" for i in range(count)]


def new_experiment(uri: str, name: str) -> str:
    """Create experiment ``name`` on the server; its id."""
    return str(MlflowClient(uri).create_experiment(name))


def client_session(uri: str, experiment_id: str, name: str, epochs: int, metrics: int, deadline: float) -> ClientResult:
    """One client with its own ``MlflowClient``: create run ``name``, log ``epochs`` × ``metrics`` points (one
    timed ``log_batch`` per epoch), log a ``ARTIFACT_BYTES`` artifact, end FINISHED, each call retried as a
    brainbench worker retries it (:func:`bench.tracking.calls.retry_call`; a log call's time includes its
    retries). Stops (``error``) at ``deadline`` (``time.monotonic()`` seconds) or at the first call that fails
    for good."""
    result = ClientResult(name)
    client = MlflowClient(uri)
    try:
        run_id = retry_call(lambda: client.create_run(experiment_id, run_name=name), where=uri).info.run_id
        result.calls += 1
        for epoch in range(epochs):
            if time.monotonic() > deadline:
                raise TimeoutError("deadline reached")
            points = [Metric(m, float(epoch) + i / 10, int(time.time() * 1000), epoch)
                      for i, m in enumerate(metric_names(metrics))]
            t0 = time.perf_counter()
            retry_call(functools.partial(client.log_batch, run_id, metrics=points), where=uri)
            result.log_s.append(time.perf_counter() - t0)
            result.calls += 1
        with tempfile.TemporaryDirectory() as folder:
            artifact = Path(folder) / ARTIFACT_NAME
            artifact.write_bytes(name.encode().ljust(ARTIFACT_BYTES, b"."))
            retry_call(lambda: client.log_artifact(run_id, str(artifact)), where=uri)
        result.calls += 1
        retry_call(lambda: client.set_terminated(run_id, "FINISHED"), where=uri)
        result.calls += 1
    except Exception as exc:  # reported per client; the load test counts what reached the server
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    return result


def server_view(uri: str, experiment_id: str, metrics: int) -> list[RunView]:
    """Every run of the experiment with each of the ``metrics`` metrics' logged steps and its artifacts."""
    client = MlflowClient(uri)
    views = []
    for run in client.search_runs([experiment_id], max_results=5000):
        run_id = run.info.run_id
        steps = {m: [point.step for point in client.get_metric_history(run_id, m)] for m in metric_names(metrics)}
        artifacts = tuple(f.path for f in client.list_artifacts(run_id))
        views.append(RunView(run.info.run_name, run.info.status, steps, artifacts))
    return views
