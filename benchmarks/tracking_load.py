"""A bounded load test of the tracking server (issue 39, part 4): K concurrent clients against the stack's
PostgreSQL-backed MLflow server with ``--auth`` (basic auth over TLS), on 127.0.0.1 only.

For each K: K threads, each with its own ``MlflowClient`` (:func:`bench.tracking.load.client_session`), create a
run, log ``--epochs`` × ``--metrics`` points (one timed ``log_batch`` per epoch), log a 4 KiB artifact and end
FINISHED; then the server is read back and checked: runs lost, duplicate runs, metric points lost or duplicated,
runs not FINISHED, artifacts missing (all must be 0). Reported: p50/p99 latency of a ``log_batch`` call (ms) and
requests/s (client API calls / wall seconds of the level; the highest K is the saturation figure).

Bounded: one global ``--deadline-s`` after which clients stop and the report says so. The stack it starts
(PostgreSQL + MLflow, ports free on 127.0.0.1, in a temporary folder) is stopped by its pids and removed; with
``--uri`` it uses a running server and the credentials in the environment instead.

Usage::

    python -m benchmarks.tracking_load --clients 4 16 32 --epochs 20 --metrics 5 [--out FILE.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.tracking.load import ARTIFACT_NAME, RunView, metric_names

DEFAULT_DEADLINE_S = 300.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between closest ranks (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Check:
    """What the server lost or doubled, counted against what the clients were asked to log."""

    runs_lost: int
    runs_duplicated: int
    points_lost: int
    points_duplicated: int
    not_finished: int
    artifacts_missing: int

    @property
    def clean(self) -> bool:
        return not any((self.runs_lost, self.runs_duplicated, self.points_lost, self.points_duplicated,
                        self.not_finished, self.artifacts_missing))


def verify(expected: Sequence[str], views: Sequence[RunView], epochs: int, metrics: int) -> Check:
    """Compare the server's runs  with ``expected`` run names, each meant to
    hold steps ``0..epochs-1`` of ``metrics`` metrics, to be FINISHED and to carry the artifact. A lost run
    loses all its points; a duplicate run (a name seen twice) counts once in ``runs_duplicated`` and its extra
    copies are not checked further."""
    names = Counter(v.name for v in views)
    runs_lost = sum(1 for name in expected if names[name] == 0)
    runs_duplicated = sum(count - 1 for count in names.values() if count > 1)
    points_lost = runs_lost * epochs * metrics
    points_duplicated = not_finished = artifacts_missing = 0
    wanted = set(range(epochs))
    first = {v.name: v for v in reversed(list(views))}
    for name in expected:
        view = first.get(name)
        if view is None:
            continue
        not_finished += view.status != "FINISHED"
        artifacts_missing += ARTIFACT_NAME not in view.artifacts
        for metric in metric_names(metrics):
            steps = view.steps.get(metric, [])
            points_lost += len(wanted - set(steps))
            points_duplicated += len(steps) - len(set(steps))
    return Check(runs_lost, runs_duplicated, points_lost, points_duplicated, not_finished, artifacts_missing)


@dataclass(frozen=True)
class Level:
    """One K: its check, log-call latencies (s), API calls, wall seconds and client errors."""

    clients: int
    check: Check
    log_s: list[float]
    calls: int
    wall_s: float
    errors: list[str]

    @property
    def requests_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else math.nan


def run_level(uri: str, clients: int, epochs: int, metrics: int, deadline: float, tag: str) -> Level:
    """K = ``clients`` threads against ``uri`` in a new experiment, then the server read back and checked."""
    from bench.tracking.load import client_session, new_experiment, server_view

    experiment = new_experiment(uri, f"load-{tag}-k{clients}")
    names = [f"client-{i:03d}" for i in range(clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda n: client_session(uri, experiment, n, epochs, metrics, deadline), names))
    wall = time.perf_counter() - t0
    check = verify(names, server_view(uri, experiment, metrics), epochs, metrics)
    return Level(clients, check, [s for r in results for s in r.log_s], sum(r.calls for r in results), wall,
                 [f"{r.name}: {r.error}" for r in results if r.error])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def auth_stack() -> Iterator[str]:
    """PostgreSQL + an MLflow server with ``--auth`` on 127.0.0.1 (free ports, a temporary folder PostgreSQL's
    user can reach), its client environment set in ``os.environ``; yields the URI; stopped by pid and removed."""
    from bench import stack

    folder = Path(tempfile.mkdtemp(prefix="bbload-", dir="/tmp"))
    folder.chmod(0o755)
    root = folder / "stack"
    ports = stack.StackPorts(postgres=_free_port(), mlflow=_free_port(), ray=_free_port(), auth=True)
    saved = dict(os.environ)
    try:
        stack.up(root, ports, ("postgres", "mlflow"))
        os.environ.update(stack.client_env(root, ports))
        yield ports.tracking_uri
    finally:
        stack.down(root)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)


def render(levels: Sequence[Level], epochs: int, metrics: int, stopped: bool) -> str:
    """The Markdown table of the levels (latencies in ms)."""
    lines = [f"{len(levels)} level(s); each client: 1 create, {epochs} log_batch of {metrics} metrics, 1 artifact "
             "(4 KiB), 1 terminate", "",
             "| K | runs lost | duplicate runs | points lost | duplicate points | not FINISHED | artifacts missing "
             "| log p50 ms | log p99 ms | API calls | wall s | requests/s | client errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in levels:
        c = lv.check
        lines.append(f"| {lv.clients} | {c.runs_lost} | {c.runs_duplicated} | {c.points_lost} | "
                     f"{c.points_duplicated} | {c.not_finished} | {c.artifacts_missing} | "
                     f"{1000 * percentile(lv.log_s, 50):.1f} | {1000 * percentile(lv.log_s, 99):.1f} | {lv.calls} | "
                     f"{lv.wall_s:.1f} | {lv.requests_per_s:.1f} | {len(lv.errors)} |")
    if stopped:
        lines += ["", "**Stopped at the deadline**: the levels after the last row did not run."]
    for lv in levels:
        lines += [f"- K={lv.clients}: {e}" for e in lv.errors[:3]]
    return "\n".join(lines) + "\n"


def environment() -> str:
    """Versions and the machine, for the report."""
    import mlflow
    import psycopg
    import sqlalchemy

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {cpu}, {os.cpu_count()} CPUs, load average {load}; Python "
            f"{platform.python_version()}, mlflow {mlflow.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
            f"psycopg {psycopg.__version__}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracking_load", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16, 32], help="K values (default 4 16 32)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S,
                        help="stop everything after this many seconds (default 300)")
    parser.add_argument("--uri", help="a running server (credentials from the environment) instead of a new stack")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.deadline_s
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", str(max(args.clients)))
    levels: list[Level] = []
    stopped = False
    with (nullcontext_uri(args.uri) if args.uri else auth_stack()) as uri:
        tag = time.strftime("%H%M%S")
        for clients in args.clients:
            if time.monotonic() > deadline:
                stopped = True
                break
            levels.append(run_level(uri, clients, args.epochs, args.metrics, deadline, tag))
    report = f"{environment()}\n\n{render(levels, args.epochs, args.metrics, stopped)}"
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0 if levels and all(lv.check.clean and not lv.errors for lv in levels) and not stopped else 1


@contextmanager
def nullcontext_uri(uri: str) -> Iterator[str]:
    yield uri


if __name__ == "__main__":
    sys.exit(main())
