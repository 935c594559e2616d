"""A scale-out stack for trying Ray + an MLflow server (127.0.0.1), sharing them on a lab network, and for tests.

``up`` starts, in order: a PostgreSQL cluster in ``<root>/pg`` (``initdb`` once, then the ``postgres``
server; run as the unprivileged user ``postgres`` when we are root, since PostgreSQL refuses root), an
``mlflow server`` whose backend store is that database (``postgresql+psycopg://``) and which serves artifacts
from ``<root>/artifacts`` (``--artifacts-destination``: workers need no shared disk), and a Ray head node
(``ray start --head --block``, dashboard off). Each service's pid is written to ``<root>/<name>.pid``; ``down``
stops each by its own pid (then its own process group, which it leads), in reverse order.

By default PostgreSQL and MLflow listen on 127.0.0.1 with no authentication (PostgreSQL ``trust``); Ray's GCS
port listens on every interface whatever ``--node-ip-address`` says (Ray 2.60), so on a shared machine use
``auth`` or a firewall for it. ``host`` (the
address of the MLflow server and the Ray head; PostgreSQL stays on 127.0.0.1) may leave loopback only with
``auth``: then PostgreSQL's role has a scram password, the MLflow server runs MLflow's ``basic-auth`` app
(default permission none) over TLS, and Ray uses token authentication (``RAY_AUTH_MODE=token``); the secrets are
generated once under ``<root>/secrets`` (:mod:`bench.stack_auth`) and reach the services through their
environment, never their command lines.

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

from bench import stack_auth
from bench.errors import BenchError, ConfigError
from bench.processes import pid_alive
from bench.tracking.server import check_server

HOST = "127.0.0.1"
PG_BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin"))
"""Where Debian/Ubuntu put the PostgreSQL server binaries (``PATH`` is searched first)."""
PG_USER = "postgres"
"""The unprivileged system user that runs PostgreSQL when we are root."""
DB_NAME = "mlflow"
AUTH_DB_NAME = "mlflow_auth"
"""The database of MLflow's basic-auth users and permissions (with ``auth``)."""
SERVICES = ("postgres", "mlflow", "ray")
SERVER_WORKERS = 2
"""``mlflow server --workers``."""
SERVER_POOL = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "10", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "30"}
"""Database connections per engine of a server worker (tracking store and basic-auth store, each up to 40: as
many as the worker's request threads). MLflow's default, 5 + 10, made a server with 32 busy clients answer
HTTP 400 "QueuePool limit ... reached" after 30 s (docs/results/2026-12-07-tracking-load.md). Set either
variable in the environment of ``bench stack up`` to override."""
PG_MAX_CONNECTIONS = 200
"""PostgreSQL's ``max_connections``: room for every pool of :data:`SERVER_POOL` (2 workers x 2 engines x 40)."""
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class StackError(BenchError):
    """A stack service could not be started or stopped."""


@dataclass(frozen=True)
class StackPorts:
    """Where the stack listens. TCP ports: PostgreSQL (always on 127.0.0.1), the MLflow server, and Ray's head
    (GCS; ``ray+1`` is Ray's client server and ``ray+2`` its dashboard agent). ``ray_cpus``: CPUs the Ray head
    offers (None: every core). ``host``: the address of the MLflow server and the Ray head. ``auth``: passwords,
    TLS and Ray's token (required off loopback); ``tls_cert``/``tls_key``: a certificate to serve instead of a
    generated self-signed one."""

    postgres: int = 5433
    mlflow: int = 5001
    ray: int = 6380
    ray_cpus: int | None = None
    host: str = HOST
    auth: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tracking_uri(self) -> str:
        """The URI clients use (``https://`` with ``auth``; credentials come from their environment)."""
        return f"{'https' if self.auth else 'http'}://{stack_auth.client_host(self.host)}:{self.mlflow}"

    @property
    def local_tracking_uri(self) -> str:
        """The server as this machine reaches it (its readiness check)."""
        near = HOST if self.host in stack_auth.WILDCARD else self.host
        return f"{'https' if self.auth else 'http'}://{near}:{self.mlflow}"

    @property
    def database_uri(self) -> str:
        """The MLflow store in the stack's PostgreSQL, as a SQLAlchemy URI (the server's backend store; with
        ``auth`` its password comes from ``PGPASSFILE``, never the URI)."""
        return f"postgresql+psycopg://{DB_NAME}@{HOST}:{self.postgres}/{DB_NAME}"

    @property
    def auth_database_uri(self) -> str:
        return f"postgresql+psycopg://{DB_NAME}@{HOST}:{self.postgres}/{AUTH_DB_NAME}"

    @property
    def ray_address(self) -> str:
        return f"{self.host}:{self.ray}"


def secrets_of(root: Path) -> stack_auth.StackSecrets:
    """The stack's secrets folder, ``<root>/secrets``."""
    return stack_auth.StackSecrets(root / "secrets")


def check_access(ports: StackPorts, services: tuple[str, ...]) -> None:
    """Refuse (``ConfigError``, before anything starts) a stack that would leave loopback without ``auth``, half
    a certificate, a certificate that is not there, or a Ray head on a wildcard address."""
    if not stack_auth.is_loopback(ports.host) and not ports.auth:
        raise ConfigError(f"--host {ports.host} would let anyone on that network read, change or delete every "
                          "experiment", fix="add --auth (passwords, TLS, Ray's token), or keep --host 127.0.0.1")
    if (ports.tls_cert is None) != (ports.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together", fix="give both, or neither for a generated one")
    if (ports.tls_cert or ports.tls_key) and not ports.auth:
        raise ConfigError("--tls-cert/--tls-key need --auth", fix="add --auth")
    for given in (ports.tls_cert, ports.tls_key):
        if given is not None and not Path(given).is_file():
            raise ConfigError(f"TLS file {given} does not exist", fix="give an existing PEM certificate and key")
    if "ray" in services and ports.host in stack_auth.WILDCARD:
        raise ConfigError(f"Ray's head needs this machine's own address, not {ports.host!r}",
                          fix="pass --host <this machine's IP or name>, or --no-ray")


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


def _pg_auth_method(data: Path) -> str | None:
    """How the cluster in ``data`` authenticates (``trust``, ``scram-sha-256``; the last field of the first rule
    of its ``pg_hba.conf``), or None when it was never made."""
    hba = data / "pg_hba.conf"
    if not hba.is_file():
        return None
    rules = [line.split() for line in hba.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return rules[0][-1] if rules else None


def _initdb(data: Path, ports: StackPorts, user: str | None) -> subprocess.CompletedProcess[str]:
    """``initdb`` with ``trust``, or with ``auth`` a scram password read from a file PostgreSQL's user can read
    (``--pwfile``, a 0600 copy removed at once)."""
    argv = [str(pg_bin("initdb")), "-D", str(data), "-U", DB_NAME, "--no-locale", "-E", "UTF8"]
    if not ports.auth:
        return subprocess.run([*argv, "--auth=trust"], capture_output=True, text=True, check=False,
                              user=user, group=user)
    folder = Path(tempfile.mkdtemp(prefix="bench-initdb-"))
    pwfile = folder / "pw"
    try:
        pwfile.write_text(secrets_of(data.parent).read(secrets_of(data.parent).pg_password) + "\n")
        pwfile.chmod(0o600)
        if user:
            shutil.chown(folder, user, user)
            shutil.chown(pwfile, user, user)
        return subprocess.run([*argv, "--auth=scram-sha-256", f"--pwfile={pwfile}"], capture_output=True,
                              text=True, check=False, user=user, group=user)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_postgres(root: Path, ports: StackPorts) -> int:
    """``initdb`` (first time) and start PostgreSQL on 127.0.0.1; create the ``mlflow`` database (and with
    ``auth`` ``mlflow_auth``); its pid."""
    data = root / "pg"
    user = _pg_user()
    method = _pg_auth_method(data)
    if method is not None and (method == "trust") == ports.auth:
        made = "without --auth (trust)" if method == "trust" else "with --auth (a password)"
        raise StackError(f"the stack's PostgreSQL was made {made}", path=data,
                         fix=f"{'drop' if method == 'trust' else 'add'} --auth, or use another --dir")
    if not (data / "PG_VERSION").is_file():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(data, PG_USER, PG_USER)
        data.chmod(0o700)
        done = _initdb(data, ports, user)
        if done.returncode != 0:
            raise StackError(f"initdb failed: {(done.stderr or done.stdout).strip()[-800:]}", path=data,
                             fix=f"the folder and its parents must be reachable by {PG_USER!r}" if user else None)
    _check_port_free(ports.postgres, "PostgreSQL")
    process = _start(root, "postgres", [str(pg_bin("postgres")), "-D", str(data), "-h", HOST,
                                        "-p", str(ports.postgres), "-k", str(data),
                                        "-c", f"max_connections={PG_MAX_CONNECTIONS}"], user=user, group=user)

    def ready() -> bool:
        import psycopg

        try:
            conninfo = f"postgresql://{DB_NAME}@{HOST}:{ports.postgres}/postgres"
            if ports.auth:
                conninfo += f"?passfile={secrets_of(root).pgpass}"
            with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as conn:
                for name in (DB_NAME, AUTH_DB_NAME) if ports.auth else (DB_NAME,):
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                        conn.execute(f"CREATE DATABASE {name}")
            return True
        except psycopg.OperationalError:
            return False

    _wait(ready, "PostgreSQL", process, root / "postgres.log")
    return process.pid


def tls_files(root: Path, ports: StackPorts) -> tuple[Path, Path]:
    """The certificate and key the MLflow server serves: the given ones, else the generated pair."""
    if ports.tls_cert and ports.tls_key:
        return Path(ports.tls_cert).resolve(), Path(ports.tls_key).resolve()
    return secrets_of(root).tls_cert, secrets_of(root).tls_key


def client_env(root: Path, ports: StackPorts) -> dict[str, str]:
    """What a client of an ``auth`` stack needs in its environment (secrets included: never put it on a
    command line): the tracking URI, the admin's credentials, the certificate to verify the server with,
    PostgreSQL's ``PGPASSFILE`` and Ray's token; empty without ``auth``."""
    if not ports.auth:
        return {}
    keys = secrets_of(root)
    return {"MLFLOW_TRACKING_URI": ports.tracking_uri, "MLFLOW_TRACKING_USERNAME": stack_auth.ADMIN_USER,
            "MLFLOW_TRACKING_PASSWORD": keys.read(keys.admin_password),
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(tls_files(root, ports)[0]), "PGPASSFILE": str(keys.pgpass),
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(keys.ray_token)}


def start_mlflow(root: Path, ports: StackPorts) -> int:
    """Start ``mlflow server`` on the PostgreSQL store, serving artifacts from ``<root>/artifacts``; its pid.

    With ``auth``: MLflow's ``basic-auth`` app (users in PostgreSQL, its secrets in the environment), TLS
    (uvicorn's ``--ssl-*``), ``--allowed-hosts`` for the names clients use. The store's URI is given as
    ``MLFLOW_BACKEND_STORE_URI`` (environment), its password as ``PGPASSFILE``."""
    _check_port_free(ports.mlflow, "the MLflow server")
    artifacts = (root / "artifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    argv = [str(mlflow), "server", "--host", ports.host, "--port", str(ports.mlflow), "--workers", str(SERVER_WORKERS),
            "--artifacts-destination", artifacts.as_uri()]
    env = {**SERVER_POOL, **os.environ, "MLFLOW_BACKEND_STORE_URI": ports.database_uri}
    cafile = None
    if ports.auth:
        keys = secrets_of(root)
        stack_auth.write_auth_config(keys.auth_config, ports.auth_database_uri)
        cert, key = tls_files(root, ports)
        cafile = str(cert)
        allowed = [f"{name}{port}" for name in stack_auth.host_names(ports.host) for port in ("", f":{ports.mlflow}")]
        argv += ["--app-name", "basic-auth", "--allowed-hosts", ",".join(allowed),
                 "--uvicorn-opts", f"--ssl-certfile {cert} --ssl-keyfile {key}"]
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(keys.auth_config), PGPASSFILE=str(keys.pgpass),
                   MLFLOW_AUTH_ADMIN_PASSWORD=keys.read(keys.admin_password),
                   MLFLOW_FLASK_SERVER_SECRET_KEY=keys.read(keys.flask_secret_key))
    process = _start(root, "mlflow", argv, env=env)

    def ready() -> bool:
        try:
            check_server(ports.local_tracking_uri, timeout_s=2, attempts=1, cafile=cafile)
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
    """Start a Ray head node (``ray start --head --block``, dashboard off) on ``host``; its pid. With ``auth``
    it requires Ray's token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``), and its environment carries the
    MLflow client's (:func:`client_env`), which the workers it starts inherit. Without, ``RAY_AUTH_MODE=disabled``:
    Ray 2.60 would otherwise turn token auth on by itself when ``~/.ray/auth_token`` exists (its first local
    ``ray.init()`` writes one), and then refuse the sweeps that join it by address."""
    _check_port_free(ports.ray, "Ray's head")
    ray = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **client_env(root, ports)}
    argv = [str(ray), "start", "--head", "--block", "--node-ip-address", ports.host, "--port", str(ports.ray),
            "--ray-client-server-port", str(ports.ray + 1), "--dashboard-agent-listen-port", str(ports.ray + 2),
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(_ray_temp_dir(root))]
    if ports.ray_cpus:
        argv += ["--num-cpus", str(ports.ray_cpus)]
    process = _start(root, "ray", argv, env=env)
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
    check_access(ports, services)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # PostgreSQL's user must reach <root>/pg
    if ports.auth:
        secrets_of(root).ensure(ports.host, (root / "pg" / "PG_VERSION").is_file(), ports.tls_cert is not None)
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


def read_ports(root: Path) -> StackPorts | None:
    """How the stack in ``root`` was last started (``ports.json``), or None."""
    path = root / "ports.json"
    return StackPorts(**json.loads(path.read_text())) if path.is_file() else None


def status(root: Path) -> dict[str, int | None]:
    """Each service's pid if it is running, else None."""
    out: dict[str, int | None] = {}
    for name in SERVICES:
        pid = read_pid(root, name)
        out[name] = pid if pid is not None and pid_alive(pid) else None
    return out
