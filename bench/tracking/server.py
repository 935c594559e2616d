"""A tracking server's side of tracking, without MLflow: is a URI a server, does it answer, bounded retries.

Importing it (``bench.tracking`` does) sets ``HTTP_RETRY_DEFAULTS``, which MLflow's HTTP client reads at each request.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from bench.errors import BenchError

HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",  # waits 0, 2, 4, 8, 16, 32 s (+ jitter): about a minute in all
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # seconds per request
}
"""MLflow's client retries connection errors and 429/5xx answers; these bound it (MLflow's own defaults wait
about 4 minutes). A server restarted within about a minute is waited for; one down longer fails the run."""


def apply_retry_defaults() -> None:
    """Set each of ``HTTP_RETRY_DEFAULTS`` in the environment unless the user set it."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


apply_retry_defaults()


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (``http://`` or ``https://``) rather than a local store."""
    return uri.startswith(("http://", "https://"))


class TrackingServerError(BenchError):
    """The tracking server did not answer (after MLflow's bounded retries)."""


def check_server(uri: str, timeout_s: float = 5.0, attempts: int = 3) -> None:
    """Ask a tracking server's ``/health`` endpoint; raise :class:`TrackingServerError` naming ``uri`` if it
    does not answer ``OK`` within ``attempts`` tries of ``timeout_s`` seconds each (1 s apart)."""
    problem = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
                if answer.status == 200:
                    return
                problem = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt < attempts - 1:
            time.sleep(1.0)
    raise TrackingServerError(f"tracking server {uri} is unreachable ({problem})",
                              fix="start it (`bench stack up`) or set tracking.uri / --tracking-uri")
