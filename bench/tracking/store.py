"""Tracking URIs, checked without MLflow: whether a store can be opened (one ``BenchError`` naming the URI, password
hidden, and the fix, before any run starts) and where a local artifact location lies on disk."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from bench.errors import ConfigError
from bench.redact import hide_password
from bench.tracking.server import TrackingServerError, check_server, is_server

DATABASE_DIALECTS = ("sqlite", "postgresql", "mysql", "mssql")
"""The SQLAlchemy databases MLflow can keep its store in (``dialect[+driver]://``)."""
DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'"}
"""The pip package of a database driver module whose name differs from it."""
STORE_FIX = "use sqlite:///path/mlflow.db, postgresql+psycopg://user@host:port/db or http://host:port for a server"


def check_store_uri(uri: str, timeout_s: int = 5) -> None:
    """Refuse, with one :class:`BenchError` naming the URI (password hidden) and the fix, a tracking URI that
    MLflow could not open: no scheme, MLflow's plain file store (refused since MLflow 3), a scheme that is not
    a database or a server, a database driver that is not installed, or a database or server that does not
    answer within ``timeout_s`` seconds. A sqlite file is not opened (opening creates it)."""
    if is_server(uri):
        check_server(uri)
        return
    shown = hide_password(uri)
    if "://" not in uri:
        raise ConfigError(f"tracking URI {shown!r} is not a URI", fix=STORE_FIX)
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "file":
        raise ConfigError(f"tracking URI {shown!r} is MLflow's plain file store, which MLflow 3 refuses",
                          fix=STORE_FIX)
    if scheme.split("+", 1)[0] not in DATABASE_DIALECTS:
        raise ConfigError(f"tracking URI {shown!r} has the scheme {scheme!r}, which is neither a database "
                          f"({', '.join(DATABASE_DIALECTS)}) nor a server (http, https)", fix=STORE_FIX)
    if scheme.startswith("sqlite"):
        return
    _check_database(uri, timeout_s)


def _check_database(uri: str, timeout_s: int) -> None:
    """Connect once to the SQLAlchemy database ``uri`` names (see :func:`check_store_uri`)."""
    import importlib.util

    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        url = sqlalchemy.engine.make_url(uri)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"tracking URI {hide_password(uri)!r} cannot be parsed", fix=STORE_FIX) from exc
    shown = url.render_as_string(hide_password=True)
    dialect = url.get_backend_name()
    try:
        engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool,
            connect_args={"connect_timeout": timeout_s} if dialect in ("postgresql", "mysql") else {},
        )
    except NoSuchModuleError as exc:
        raise ConfigError(f"tracking URI {shown!r} names a database driver SQLAlchemy does not know ({exc})",
                          fix=STORE_FIX) from exc
    except ImportError as exc:
        installed = dialect == "postgresql" and importlib.util.find_spec("psycopg") is not None
        package = DRIVER_PACKAGES.get(exc.name or "", exc.name)
        raise ConfigError(
            f"tracking URI {shown!r} needs the database driver {exc.name or exc}, which is not installed",
            fix="name the installed driver: postgresql+psycopg://…" if installed else f"pip install {package}",
        ) from exc
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise TrackingServerError(f"tracking database {shown} is unreachable ({reason[0] if reason else exc})",
                                  fix="start it (`bench stack up`) or set tracking.uri / --tracking-uri") from exc
    finally:
        engine.dispose()


def local_artifacts(artifact_uri: str) -> Path | None:
    """The folder of a local artifact location (``file:///...`` or a plain path), else None (a server's
    ``mlflow-artifacts:``, s3, ...). A run's outputs folder is the source of its files; on a local store its
    artifacts are hard links to them, so each file is on disk once (``bench.io.link_tree``)."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" and artifact_uri.startswith("/"):
        return Path(artifact_uri)
    return None
