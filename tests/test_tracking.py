"""``bench.tracking.store.check_store_uri``: a tracking URI MLflow could not open is one ``BenchError`` naming it
(password hidden) and the fix, before MLflow is asked (which would print a traceback: sqlalchemy's for an
unreachable database, MLflow's own for an unknown scheme or its plain file store, an ImportError for a
missing driver). The same check run against a real PostgreSQL lives in ``tests/test_tracking_server.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from stack_helpers import free_ports

from bench.errors import ConfigError
from bench.tracking import calls as tracking_calls
from bench.tracking.calls import retry_call
from bench.tracking.runs import Tracker, existing_store
from bench.tracking.server import TrackingServerError
from bench.tracking.store import check_store_uri


@pytest.mark.parametrize(
    ("uri", "mentions"),
    [
        ("runs/mlflow.db", ("'runs/mlflow.db' is not a URI", "sqlite:///")),
        ("file:///tmp/mlruns", ("'file:///tmp/mlruns'", "plain file store", "sqlite:///")),
        ("foo://bar", ("'foo://bar'", "scheme 'foo'", "neither a database")),
        ("s3://bucket/store", ("scheme 's3'",)),
        ("mysql://u@127.0.0.1/db", ("'mysql://u@127.0.0.1/db'", "driver MySQLdb", "pip install mysqlclient")),
        ("postgresql+psycopg2://u@127.0.0.1/db", ("driver psycopg2", "postgresql+psycopg://")),
        ("postgresql+nosuch://u@127.0.0.1/db", ("driver SQLAlchemy does not know",)),
        ("postgresql://u:secret@127.0.0.1:notaport/db", ("cannot be parsed", "u:***@")),
    ],
    ids=["no-scheme", "file-store", "unknown-scheme", "s3", "mysql-no-driver", "psycopg2-missing",
         "unknown-driver", "bad-port"],
)
def test_a_uri_mlflow_cannot_open_is_one_config_error(uri: str, mentions: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as caught:
        check_store_uri(uri)
    message = caught.value.message
    for needle in mentions:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "secret" not in message
    assert "\n" not in message


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_an_unreachable_database_is_named_without_its_password(scheme: str) -> None:
    port = free_ports(1)[0]
    with pytest.raises(TrackingServerError) as caught:
        check_store_uri(f"{scheme}://brain:secret@127.0.0.1:{port}/mlflow")
    message = caught.value.message
    assert f"tracking database {scheme}://brain:***@127.0.0.1:{port}/mlflow is unreachable" in message
    assert "secret" not in message and "\n" not in message


def test_a_sqlite_uri_is_not_opened_by_the_check(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    check_store_uri(f"sqlite:///{database}?timeout=30")
    assert not database.exists()


def test_readers_and_the_tracker_refuse_the_same_uris(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    with pytest.raises(TrackingServerError, match="is unreachable"):
        existing_store(f"postgresql://u@127.0.0.1:{port}/db", tmp_path)
    with pytest.raises(ConfigError, match="plain file store"):
        Tracker("exp", f"file://{tmp_path}/mlruns", tmp_path)
    assert list(tmp_path.iterdir()) == [], "a refused URI left files behind"


def _failing(messages: list[str], result: int = 7) -> tuple[list[int], Callable[[], int]]:
    """A call that raises an ``MlflowException`` with each of ``messages`` in turn, then returns ``result``."""
    calls: list[int] = []

    def call() -> int:
        calls.append(1)
        if len(calls) <= len(messages):
            raise MlflowException(messages[len(calls) - 1], error_code=BAD_REQUEST)
        return result

    return calls, call


POOL_TIMEOUT = "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"


def test_a_server_out_of_database_connections_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(tracking_calls.time, "sleep", waits.append)
    calls, call = _failing([POOL_TIMEOUT, POOL_TIMEOUT])
    assert retry_call(call) == 7
    assert len(calls) == 3 and waits == [0.2, 0.4]


def test_a_server_out_of_connections_for_every_try_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking_calls.time, "sleep", lambda s: None)
    calls, call = _failing([POOL_TIMEOUT] * 3)
    with pytest.raises(MlflowException, match="QueuePool limit"):
        retry_call(call, attempts=3)
    assert len(calls) == 3


def test_any_other_bad_request_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking_calls.time, "sleep", lambda s: None)
    calls, call = _failing(["Invalid value 'x' for parameter 'max_results'"])
    with pytest.raises(MlflowException, match="Invalid value"):
        retry_call(call)
    assert len(calls) == 1
