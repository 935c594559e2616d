"""Process helpers shared by the run tracker, the local stack and the entry points: whether a pid is alive,
and stop signals (SIGTERM, SIGHUP) turned into an exception so that a stopped run unwinds like Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import psutil

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
"""What ``kill``, ``scancel``, a job scheduler's time limit, ``docker stop`` or a closed terminal send."""


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (also when it belongs to another user); a zombie (exited, not reaped) is not alive."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.AccessDenied:  # another user's process: it exists
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


def is_live_child(pid: int) -> bool:
    """True if ``pid`` is alive and a child of this process (psutil: Linux, macOS, Windows)."""
    try:
        process = psutil.Process(pid)
        return process.ppid() == os.getpid() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal.

    A ``KeyboardInterrupt`` so that everything that cleans up after Ctrl-C also cleans up after it: the open
    MLflow run ends KILLED (``bench.tracking.ChildRun``), an unfinished run folder is removed.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by signal N: 128 + N (143 for SIGTERM)."""
        return 128 + self.signum


def interruption(exc: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the process and its exit code: ``("stopped by SIGTERM", 143)`` for :class:`Terminated`,
    ``("interrupted", 130)`` for Ctrl-C."""
    if isinstance(exc, Terminated):
        return str(exc), exc.exit_code
    return "interrupted", 128 + signal.SIGINT


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # Only the first signal raises: a second SIGTERM while the first unwinds must not cut the clean-up short.
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    A signal the process was started with ignored (``nohup`` ignores SIGHUP) stays ignored. Outside the main
    thread, or nested inside itself, it changes nothing. The previous handlers are restored on the way out.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {stop: signal.getsignal(stop) for stop in STOP_SIGNALS}
    if any(handler is _raise_terminated for handler in previous.values()):
        yield
        return
    for stop, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(stop, _raise_terminated)
    try:
        yield
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)
