"""A tracking server's side of tracking, without MLflow: is a URI a server, does it answer, bounded retries.

Importing it (``bench.tracking`` does) sets ``HTTP_RETRY_DEFAULTS``, which MLflow's HTTP client reads at each request.
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.error
import urllib.request

from bench.errors import BenchError
from bench.redact import hide_password, without_userinfo

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


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """How an ``https://`` server is verified, as MLflow's client does it: against ``cafile``, else
    ``$MLFLOW_TRACKING_SERVER_CERT_PATH`` (a self-signed stack's certificate), else the system's CAs; not at all
    when ``$MLFLOW_TRACKING_INSECURE_TLS`` is ``true``."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # the user asked for it (as for MLflow)
    return ssl.create_default_context(cafile=cafile or os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def check_server(uri: str, timeout_s: float = 5.0, attempts: int = 3, cafile: str | None = None) -> None:
    """Ask a tracking server's ``/health`` endpoint (unauthenticated, also under MLflow's basic-auth app; an
    ``https://`` one verified by :func:`tls_context`); raise :class:`TrackingServerError` naming ``uri``
    (password hidden) if it does not answer ``OK`` within ``attempts`` tries of ``timeout_s`` seconds each (1 s
    apart)."""
    problem = ""
    context = tls_context(cafile) if uri.startswith("https://") else None
    health = f"{without_userinfo(uri).rstrip('/')}/health"
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(health, timeout=timeout_s, context=context) as answer:
                if answer.status == 200:
                    return
                problem = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
        if attempt < attempts - 1:
            time.sleep(1.0)
    raise TrackingServerError(f"tracking server {hide_password(uri)} is unreachable ({hide_password(problem)})",
                              fix="start it (`bench stack up`) or set tracking.uri / --tracking-uri")
