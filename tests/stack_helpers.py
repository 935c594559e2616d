"""Helpers for tests that start the real local stack (bench.stack): free ports, a stack folder PostgreSQL's
user can reach, PostgreSQL's availability (a loud skip outside CI, a failure in CI), and stray-process checks."""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import stack
from bench.processes import pid_alive


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, span: int = 1) -> list[int]:
    """``count`` base ports, each followed by ``span - 1`` free ports too, in 20000-40000 (random, so
    engineers sharing the machine rarely collide)."""
    found: list[int] = []
    while len(found) < count:
        base = random.randrange(20000, 40000 - span)
        block = range(base, base + span)
        if all(port_free(p) for p in block) and not any(p in range(f, f + span) for f in found for p in block):
            found.append(base)
    return found


def stack_ports(ray_cpus: int | None = 2) -> stack.StackPorts:
    pg, mlflow, ray = free_ports(3, span=3)
    return stack.StackPorts(postgres=pg, mlflow=mlflow, ray=ray, ray_cpus=ray_cpus)


def require_postgres() -> None:
    """Skip loudly when PostgreSQL's server binaries are missing (``make test`` installs them); in CI fail."""
    try:
        stack.pg_bin("initdb")
        stack.pg_bin("postgres")
    except stack.StackError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc.message}")
        pytest.skip(f"NO POSTGRESQL: {exc.message} - `make test` installs it (apt-get install -y postgresql)")


@contextmanager
def stack_dir() -> Iterator[Path]:
    """A stack folder under /tmp that the ``postgres`` user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="bbstack-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root / "stack"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. the stack folder or a port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] != "Z" and text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def assert_stack_gone(root: Path, pids: dict[str, int | None]) -> None:
    """Every service's process (and process group) has ended, and no process mentions the stack folder."""
    for name, pid in pids.items():
        if pid is not None:
            assert not pid_alive(pid), f"{name} (pid {pid}) still running"
            assert stack._group_members(pid) == [], f"{name}'s process group still has members"
    assert processes_mentioning(str(root)) == []
