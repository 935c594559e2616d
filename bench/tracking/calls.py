"""How brainbench asks MLflow: a call retried while the store or server is only busy (a locked sqlite store, a
race lost to another worker's insert, a server out of database connections), and the one-line errors for what
retrying cannot mend (a full store, a full artifact store on a server, a refused or silent server).

Example:
    >>> run = retry_call(lambda: client.get_run(run_id), where=uri)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from mlflow.exceptions import MlflowException

from bench.errors import DataError
from bench.io import no_space_error
from bench.redact import without_userinfo
from bench.tracking.server import TrackingServerError

T = TypeVar("T")


STORE_FULL = ("database or disk is full", "no space left on device", "could not extend file")
"""How a full store reports itself: sqlite's SQLITE_FULL, the OS's ENOSPC, PostgreSQL's ``DiskFull``."""
ARTIFACT_UPLOAD = re.compile(r"(\S*/mlflow-artifacts/artifacts/\S*)")
SERVER_ERROR = ("too many 500 error responses", "500 Server Error", "Connection aborted.")
"""An artifact upload a server failed: HTTP 500, through MLflow's retries or without them, or the connection
aborted (uvicorn closes it after a 500 from a failed upload: the retry on it, or the rest of a large body, is
reset)."""


TRANSIENT = ("locked", "duplicate key value", "unique constraint failed", "queuepool limit")
"""Failures a retry mends: "locked", another worker holds sqlite; "duplicate key" (PostgreSQL) / "unique
constraint failed" (sqlite), a worker lost a race to insert the same row (say a dataset input two runs share) and
the retry finds the winner's row; "queuepool limit", a busy server waited 30 s for one of its database
connections and answered HTTP 400 before touching the store (MLflow's client retries no 400)."""


class _QuietStoreFull(logging.Filter):
    """Drop MLflow's traceback of a full sqlite store (``mlflow.store.db.utils`` logs one before it raises): the
    run's ``error:`` line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not any(marker in str(error).lower() for marker in STORE_FULL)


logging.getLogger("mlflow.store.db.utils").addFilter(_QuietStoreFull())


def store_full_error(exc: BaseException, where: str | None) -> DataError | None:
    """The one-line error for a store that ran out of space while ``exc`` was raised (None: not that):
    ``where`` is the tracking URI (a sqlite store is named by its file). A server answers an artifact upload on
    a full artifact store with a bare HTTP 500 and closes the connection (the reason stays in its log), so that
    is reported as one. A URI is named in the text: as a path, ``http://`` would lose a slash."""
    text = str(exc)
    if any(marker in text.lower() for marker in STORE_FULL):
        store = where or "the MLflow store"
        if store.startswith("sqlite:///"):
            store = store.removeprefix("sqlite:///").split("?", 1)[0]
        fix = ("free space on the store's disk, or move paths.runs / the tracking URI elsewhere, and run the same "
               "command again: finished configurations are skipped, one left RUNNING is marked KILLED")
        if "://" in store:
            return DataError(f"{without_userinfo(store)}: no space left on the device", fix=fix)
        return no_space_error(exc, store, fix=fix)
    upload = ARTIFACT_UPLOAD.search(text)
    if upload and any(marker in text for marker in SERVER_ERROR):
        server = without_userinfo(where or upload.group(1).split("/api/", 1)[0])
        return DataError(f"{server} (artifact store): the server could not store "
                         f"{upload.group(1).split('/artifacts/', 1)[1]}: HTTP 500 or a dropped upload on every try, "
                         "most likely no space left on the device: the server's log has the reason",
                         fix="free space on the server's artifact store, `bench stack`: <dir>/artifacts, and run "
                         "the same command again: finished configurations are skipped")
    return None


def retry_call(call: Callable[[], T], attempts: int = 8, where: str | None = None) -> T:
    """Retry an MLflow call that failed because sqlite was locked, a server's insert raced with another worker, or
    a busy server ran out of database connections (``attempts`` tries, 0.2 s doubling: 51 s in all by default).

    A server that stays unreachable through MLflow's own HTTP retries becomes a :class:`TrackingServerError`; a
    full store (``where``: its URI) a ``DataError`` naming it (:func:`store_full_error`).
    """
    for attempt in range(attempts):
        try:
            return call()
        except (MlflowException, requests.HTTPError, OSError) as exc:
            full = store_full_error(exc, where)
            if full is not None:
                raise full from exc
            if not isinstance(exc, MlflowException):
                raise
            text = str(exc)
            refused = re.search(r"API request to (?:endpoint )?(\S+) failed with error code (401|403)", text)
            if refused:
                raise TrackingServerError(
                    f"tracking server refused {refused.group(1)} (HTTP {refused.group(2)}: "
                    f"{'no or wrong credentials' if refused.group(2) == '401' else 'no permission'})",
                    fix="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment "
                    "(`bench stack env` prints them for the stack)") from exc
            if text.startswith("API request to") and "failed with exception" in text:
                url = text.removeprefix("API request to ").split(" ", 1)[0]
                raise TrackingServerError(f"tracking server did not answer {url} "
                                          f"({text.rsplit('(Caused by', 1)[-1].strip(' )')[:300]})") from exc
            if not any(m in text.lower() for m in TRANSIENT) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")
