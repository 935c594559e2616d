"""``bench stack up|down|status``: PostgreSQL + an MLflow server on it + a Ray head, on 127.0.0.1 (bench.stack)."""

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
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=Path("runs/stack"), help="stack folder (default runs/stack)")
    for name, port in DEFAULTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help=f"{name} port (default {port})")
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs the Ray head offers (default: all)")
    parser.add_argument("--no-ray", action="store_true", help="start PostgreSQL and MLflow only")
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
        return 0
    ports = stack.StackPorts(postgres=args.postgres_port, mlflow=args.mlflow_port, ray=args.ray_port,
                             ray_cpus=args.ray_cpus)
    services = tuple(s for s in stack.SERVICES if not (args.no_ray and s == "ray"))
    seconds = stack.up(root, ports, services)
    for name, took in seconds.items():
        print(f"started {name} in {took:.1f} s")
    print(f"tracking.uri={ports.tracking_uri}")
    if "ray" in services:
        print(f"hydra/launcher=ray hydra.launcher.ray.init.address={ports.ray_address}")
    return 0
