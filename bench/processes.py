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


# ------------------------------------------------------------------------------------------- peak memory
PROC_STATUS = "/proc/self/status"
PROC_CLEAR_REFS = "/proc/self/clear_refs"
SAMPLE_SECONDS = 0.05


def _high_water_mark_mb() -> float | None:
    """Linux's ``VmHWM`` (this process's peak resident set since start or the last reset) in MiB, or None."""
    try:
        with open(PROC_STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current resident set (``echo 5 > /proc/self/clear_refs``); False where it cannot."""
    try:
        with open(PROC_CLEAR_REFS, "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return _high_water_mark_mb() is not None


class PeakMemory:
    """This process's peak resident memory (MiB) over a ``with`` block, not over the process's life.

    ``ru_maxrss`` only grows, so a worker process that runs several jobs (joblib reuses its workers) would report
    the largest job's peak for every later one. On Linux the kernel's high-water mark is reset when the block
    starts and read when it ends (exact, free); elsewhere a thread samples the resident set every
    ``SAMPLE_SECONDS`` (a peak shorter than that can be missed). ``method`` says which.

    Example:
        >>> with PeakMemory() as memory:        # doctest: +SKIP
        ...     run()
        >>> memory.peak_mb                      # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.method = ""
        self._sampled = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._final: float | None = None

    def __enter__(self) -> PeakMemory:
        if _reset_high_water_mark():
            self.method = "kernel high-water mark"
        else:
            self.method = f"sampled every {SAMPLE_SECONDS} s"
            self._sampled = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._final = self.peak_mb
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    @staticmethod
    def _rss_mb() -> float:
        return float(psutil.Process().memory_info().rss) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sampled = max(self._sampled, self._rss_mb())

    @property
    def peak_mb(self) -> float:
        """The peak so far (inside the block) or at its end (after it)."""
        if self._final is not None:
            return self._final
        if self._thread is None:
            return _high_water_mark_mb() or 0.0
        return max(self._sampled, self._rss_mb())
