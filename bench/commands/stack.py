"""``bench stack up|down|status|env``: PostgreSQL + an MLflow server on it + a Ray head (bench.stack); on
127.0.0.1, or shared on a network with ``--host ADDR --auth``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULTS = {"postgres": 5433, "mlflow": 5001, "ray": 6380}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "stack", help="start/stop a local PostgreSQL + MLflow server + Ray head on 127.0.0.1",
        description="Start (up), stop (down) or list (status) a local scale-out stack: a PostgreSQL cluster in "
        "<dir>/pg, an MLflow server on it serving artifacts from <dir>/artifacts, and a Ray head node, all on "
        "127.0.0.1; pids in <dir>/*.pid, logs in <dir>/*.log. Then sweep with tracking.uri=http://127.0.0.1:"
        "<mlflow-port> hydra/launcher=ray hydra.launcher.ray.init.address=127.0.0.1:<ray-port>.",
    )
    parser.add_argument("action", choices=("up", "down", "status", "env"),
                        help="env: print the export lines (secrets included) a client of an --auth stack sources")
    parser.add_argument("--dir", type=Path, default=Path("runs/stack"), help="stack folder (default runs/stack)")
    for name, port in DEFAULTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"{name} port (default {port})")
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs the Ray head offers (default: all)")
    parser.add_argument("--no-ray", action="store_true", help="start PostgreSQL and MLflow only")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the MLflow server and Ray's head listen on (default 127.0.0.1; any other "
                        "needs --auth; PostgreSQL stays on 127.0.0.1)")
    parser.add_argument("--auth", action="store_true",
                        help="passwords (MLflow basic-auth, PostgreSQL scram), TLS and Ray's token; secrets are "
                        "generated once in <dir>/secrets")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate to serve (default: generated)")
    parser.add_argument("--tls-key", type=Path, default=None, help="its PEM private key")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench import stack

    root = args.dir.resolve()
    if args.action == "down":
        stopped = stack.down(root)
        print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if args.action == "status":
        for name, pid in stack.status(root).items():
            print(f"{name:9s} {'running, pid ' + str(pid) if pid else 'stopped'}")
        _print_access(root, stack.read_ports(root))
        return 0
    if args.action == "env":
        return _print_env(root, stack.read_ports(root))
    ports = stack.StackPorts(postgres=args.postgres_port, mlflow=args.mlflow_port, ray=args.ray_port,
                             ray_cpus=args.ray_cpus, host=args.host, auth=args.auth,
                             tls_cert=None if args.tls_cert is None else str(args.tls_cert.resolve()),
                             tls_key=None if args.tls_key is None else str(args.tls_key.resolve()))
    services = tuple(s for s in stack.SERVICES if not (args.no_ray and s == "ray"))
    seconds = stack.up(root, ports, services)
    for name, took in seconds.items():
        print(f"started {name} in {took:.1f} s")
    print(f"tracking.uri={ports.tracking_uri}")
    if "ray" in services:
        print(f"hydra/launcher=ray hydra.launcher.ray.init.address={ports.ray_address}")
    if ports.auth:
        print(f"credentials: eval \"$(bench stack env --dir {args.dir})\" (secrets in {root / 'secrets'})")
    return 0


def _print_access(root: Path, ports: object) -> None:
    """Whether the stack in ``root`` was started with auth and TLS (``bench stack status``)."""
    from bench import stack

    if not isinstance(ports, stack.StackPorts):
        return
    if ports.auth:
        cert = stack.tls_files(root, ports)[0]
        print(f"{'auth':9s} on (MLflow basic-auth, user {stack.stack_auth.ADMIN_USER}; PostgreSQL scram; Ray "
              f"token; secrets in {root / 'secrets'})")
        print(f"{'tls':9s} on ({ports.tracking_uri}, certificate {cert})")
    else:
        print(f"{'auth':9s} off (listening on {ports.host} only)")
        print(f"{'tls':9s} off")


def _print_env(root: Path, ports: object) -> int:
    """``export`` lines for a client of the stack in ``root``: its URI, and with auth its secrets."""
    import shlex

    from bench import stack
    from bench.errors import ConfigError

    if not isinstance(ports, stack.StackPorts):
        raise ConfigError(f"no stack was started in {root}", fix="bench stack up first, or give its --dir")
    env = stack.client_env(root, ports) or {"MLFLOW_TRACKING_URI": ports.tracking_uri}
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0
