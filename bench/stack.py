"""A local scale-out stack on 127.0.0.1 for trying Ray + an MLflow server, and for tests.

``up`` starts, in order: a PostgreSQL cluster in ``<root>/pg`` (``initdb`` once, then the ``postgres``
server; run as the unprivileged user ``postgres`` when we are root, since PostgreSQL refuses root), an
``mlflow server`` whose backend store is that database (``postgresql+psycopg://``) and which serves artifacts
from ``<root>/artifacts`` (``--artifacts-destination``: workers need no shared disk), and a Ray head node
(``ray start --head --block``, dashboard off). Each service's pid is written to ``<root>/<name>.pid``; ``down``
stops each by its own pid (then its own process group, which it leads), in reverse order.

Example:
    >>> ports = StackPorts(postgres=5433, mlflow=5001, ray=6380)           # doctest: +SKIP
    >>> up(Path("runs/stack"), ports)                                      # doctest: +SKIP
    >>> down(Path("runs/stack"))                                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import BenchError, ConfigError
from bench.processes import pid_alive
from bench.tracking.server import check_server

HOST = "127.0.0.1"
PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin"))
"""Where Debian/Ubuntu put the PostgreSQL server binaries (``PATH`` is searched first)."""
PG_USER = "postgres"
"""The unprivileged system user that runs PostgreSQL when we are root."""
DB_NAME = "mlflow"
SERVICES = ("postgres", "mlflow", "ray")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class StackError(BenchError):
    """A stack service could not be started or stopped."""


@dataclass(frozen=True)
class StackPorts:
    """TCP ports on 127.0.0.1: PostgreSQL, the MLflow server, and Ray's head (GCS; ``ray+1`` is Ray's client
    server and ``ray+2`` its dashboard agent). ``ray_cpus``: CPUs the Ray head offers (None: every core)."""

    postgres: int = 5433
    mlflow: int = 5001
    ray: int = 6380
    ray_cpus: int | None = None

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow}"

    @property
    def database_uri(self) -> str:
        """The MLflow store in the stack's PostgreSQL, as a SQLAlchemy URI (the server's backend store)."""
        return f"postgresql+psycopg://{DB_NAME}@{HOST}:{self.postgres}/{DB_NAME}"

    @property
    def ray_address(self) -> str:
        return f"{HOST}:{self.ray}"


def pg_bin(name: str) -> Path:
    """A PostgreSQL server binary (``initdb``, ``postgres``) from ``PATH`` or Debian's folders."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise StackError(f"PostgreSQL's {name} was not found on PATH or in /usr/lib/postgresql/*/bin",
                     fix="install PostgreSQL (apt-get install -y postgresql)")


def _pg_user() -> str | None:
    """The user to run PostgreSQL as: ``postgres`` when we are root (it refuses root), else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError as exc:
        raise StackError(f"running as root and there is no user {PG_USER!r} to run PostgreSQL",
                         fix="install PostgreSQL's package (it creates the user) or run as another user") from exc
    return PG_USER


def _pid_file(root: Path, name: str) -> Path:
    return root / f"{name}.pid"


def read_pid(root: Path, name: str) -> int | None:
    """The recorded pid of a service, or None."""
    path = _pid_file(root, name)
    text = path.read_text().strip() if path.is_file() else ""
    return int(text) if text.isdigit() else None


def _start(root: Path, name: str, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it leads its process group), logging to ``<root>/<name>.log``."""
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, **kwargs)  # type: ignore[call-overload]
    log.close()
    _pid_file(root, name).write_text(f"{process.pid}\n")
    return process  # type: ignore[no-any-return]


def _wait(ready: object, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
            raise StackError(f"{what} exited with code {process.returncode} while starting: {tail.strip()}",
                             path=log)
        time.sleep(0.3)
    raise StackError(f"{what} did not become ready within {START_TIMEOUT_S:.0f} s", path=log)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def _check_port_free(port: int, what: str) -> None:
    if _port_open(port):
        raise StackError(f"port {port} on {HOST} is already in use, so {what} cannot listen there",
                         fix="choose other ports (bench stack up --help)")


def start_postgres(root: Path, ports: StackPorts) -> int:
    """``initdb`` (first time) and start PostgreSQL on 127.0.0.1; create the ``mlflow`` database; its pid."""
    data = root / "pg"
    user = _pg_user()
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(data, PG_USER, PG_USER)
        data.chmod(0o700)
        done = subprocess.run([str(pg_bin("initdb")), "-D", str(data), "-U", DB_NAME, "--auth=trust",
                               "--no-locale", "-E", "UTF8"], capture_output=True, text=True, check=False,
                              user=user, group=user)
        if done.returncode != 0:
            raise StackError(f"initdb failed: {(done.stderr or done.stdout).strip()[-800:]}", path=data,
                             fix=f"the folder and its parents must be reachable by {PG_USER!r}" if user else None)
    _check_port_free(ports.postgres, "PostgreSQL")
    process = _start(root, "postgres", [str(pg_bin("postgres")), "-D", str(data), "-h", HOST,
                                        "-p", str(ports.postgres), "-k", str(data)], user=user, group=user)

    def ready() -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://{DB_NAME}@{HOST}:{ports.postgres}/postgres", connect_timeout=2,
                                 autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone() is None:
                    conn.execute(f"CREATE DATABASE {DB_NAME}")
            return True
        except psycopg.OperationalError:
            return False

    _wait(ready, "PostgreSQL", process, root / "postgres.log")
    return process.pid


def start_mlflow(root: Path, ports: StackPorts) -> int:
    """Start ``mlflow server`` on the PostgreSQL store, serving artifacts from ``<root>/artifacts``; its pid."""
    _check_port_free(ports.mlflow, "the MLflow server")
    artifacts = (root / "artifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    process = _start(root, "mlflow", [
        str(mlflow), "server", "--host", HOST, "--port", str(ports.mlflow), "--workers", "2",
        "--backend-store-uri", ports.database_uri,
        "--artifacts-destination", artifacts.as_uri(),
    ])

    def ready() -> bool:
        try:
            check_server(ports.tracking_uri, timeout_s=2, attempts=1)
            return True
        except BenchError:
            return False

    _wait(ready, "the MLflow server", process, root / "mlflow.log")
    return process.pid


def _ray_temp_dir(root: Path) -> Path:
    """Ray's session folder: under the stack unless that path is too long for its unix sockets."""
    temp = (root / "ray").resolve()
    if len(str(temp)) > 40:
        temp = Path(tempfile.gettempdir()) / f"ray-{hashlib.sha1(str(temp).encode()).hexdigest()[:10]}"
    temp.mkdir(parents=True, exist_ok=True)
    return temp


def start_ray(root: Path, ports: StackPorts) -> int:
    """Start a Ray head node (``ray start --head --block``, dashboard off) on 127.0.0.1; its pid."""
    _check_port_free(ports.ray, "Ray's head")
    ray = Path(sys.executable).parent / "ray"
    argv = [str(ray), "start", "--head", "--block", "--node-ip-address", HOST, "--port", str(ports.ray),
            "--ray-client-server-port", str(ports.ray + 1), "--dashboard-agent-listen-port", str(ports.ray + 2),
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(_ray_temp_dir(root))]
    if ports.ray_cpus:
        argv += ["--num-cpus", str(ports.ray_cpus)]
    process = _start(root, "ray", argv)
    log = root / "ray.log"
    _wait(lambda: "Ray runtime started" in log.read_text(errors="replace"), "Ray's head", process, log)
    return process.pid


STARTERS = {"postgres": start_postgres, "mlflow": start_mlflow, "ray": start_ray}


def up(root: Path, ports: StackPorts, services: tuple[str, ...] = SERVICES) -> dict[str, float]:
    """Start ``services`` (those already running are left alone); seconds each took to become ready.

    On a failure the services this call started are stopped again before the error is raised.
    """
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise ConfigError(f"unknown stack services {sorted(unknown)}", fix=f"use {', '.join(SERVICES)}")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # PostgreSQL's user must reach <root>/pg
    (root / "ports.json").write_text(json.dumps(asdict(ports)) + "\n")
    seconds: dict[str, float] = {}
    try:
        for name in SERVICES:
            pid = read_pid(root, name)
            if name not in services or (pid is not None and pid_alive(pid)):
                continue
            t0 = time.perf_counter()
            STARTERS[name](root, ports)
            seconds[name] = time.perf_counter() - t0
    except BaseException:
        for name in reversed(list(seconds)):
            stop(root, name)
        for name in SERVICES:  # the one that failed to start
            if name not in seconds and name in services:
                stop(root, name)
        raise
    return seconds


def stop(root: Path, name: str) -> bool:
    """Stop one service by its recorded pid (SIGINT for PostgreSQL's fast shutdown, else SIGTERM), then, after
    ``STOP_TIMEOUT_S``, SIGKILL what is left of the process group it leads; True if something was running."""
    pid = read_pid(root, name)
    if pid is None:
        return False
    was_alive = pid_alive(pid)
    if was_alive:
        os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and (pid_alive(pid) or _group_members(pid)):
            time.sleep(0.2)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
    if _group_members(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _pid_file(root, name).unlink(missing_ok=True)
    return was_alive


def _group_members(pgid: int) -> list[int]:
    """Live processes in the process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def down(root: Path) -> list[str]:
    """Stop every running service, Ray first and PostgreSQL last; the names of those that were running."""
    return [name for name in reversed(SERVICES) if stop(root, name)]


def status(root: Path) -> dict[str, int | None]:
    """Each service's pid if it is running, else None."""
    out: dict[str, int | None] = {}
    for name in SERVICES:
        pid = read_pid(root, name)
        out[name] = pid if pid is not None and pid_alive(pid) else None
    return out
