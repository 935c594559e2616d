"""``bench.processes``: stop signals become :class:`Terminated` (once), ignored signals stay ignored, handlers
are restored, and nothing changes outside the main thread or when nested."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from bench.processes import Terminated, stop_signals_raise


def send(signum: int) -> None:
    """Signal this process and give the interpreter a few bytecodes to run the handler."""
    os.kill(os.getpid(), signum)
    for _ in range(100):
        time.sleep(0.01)


@pytest.fixture
def default_handlers() -> Iterator[None]:
    """Every stop signal at its default action for the test, whatever pytest set, and put back after."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for s in saved:
        signal.signal(s, signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_raises_terminated_and_handlers_come_back(signum: int, default_handlers: None) -> None:
    with pytest.raises(Terminated) as raised, stop_signals_raise():
        send(signum)
    assert raised.value.signum == signum
    assert raised.value.exit_code == 128 + signum
    assert str(raised.value) == f"stopped by {signal.Signals(signum).name}"
    assert isinstance(raised.value, KeyboardInterrupt)  # what cleans up after Ctrl-C cleans up after it
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_a_second_signal_does_not_cut_the_clean_up_short(default_handlers: None) -> None:
    cleaned = False
    with pytest.raises(Terminated), stop_signals_raise():
        try:
            send(signal.SIGTERM)
        finally:
            send(signal.SIGTERM)  # while the first one unwinds: ignored
            send(signal.SIGHUP)
            cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_ignored_signal_stays_ignored(default_handlers: None) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    with stop_signals_raise():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        send(signal.SIGHUP)  # nothing happens
        with pytest.raises(Terminated):
            send(signal.SIGTERM)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_nested_changes_nothing(default_handlers: None) -> None:
    with stop_signals_raise():
        outer = signal.getsignal(signal.SIGTERM)
        with stop_signals_raise():
            assert signal.getsignal(signal.SIGTERM) is outer
        assert signal.getsignal(signal.SIGTERM) is outer  # the inner exit did not restore SIG_DFL
        with pytest.raises(Terminated):
            send(signal.SIGTERM)


def test_outside_the_main_thread_changes_nothing(default_handlers: None) -> None:
    seen: list[object] = []

    def worker() -> None:
        with stop_signals_raise():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]


def test_bench_command_stopped_by_sigterm_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], default_handlers: None
) -> None:
    import bench.commands.models as models
    from bench.cli import main as bench_main

    def stopped(args: object) -> int:
        send(signal.SIGTERM)
        return 0

    monkeypatch.setattr(models, "run", stopped)
    assert bench_main(["models"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "error: stopped by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_peak_memory_is_the_blocks_own_peak_not_the_processes() -> None:
    import numpy as np

    from bench.processes import PeakMemory

    with PeakMemory() as big:
        block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        del block
    with PeakMemory() as small:
        block = np.ones(60 * 2**20 // 8)
        del block
    assert big.method == small.method and big.method
    assert big.peak_mb - small.peak_mb > 150, (big.peak_mb, small.peak_mb)  # ru_maxrss would say >= 300 MiB twice
    assert small.peak_mb > 50


def test_peak_memory_is_sampled_where_the_kernel_mark_cannot_be_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import numpy as np

    from bench import processes

    monkeypatch.setattr(processes, "_reset_high_water_mark", lambda: False)
    with processes.PeakMemory() as memory:
        before = memory.peak_mb
        block = np.ones(200 * 2**20 // 8)
        time.sleep(0.3)  # a few samples while the block is held
        del block
    assert memory.method.startswith("sampled")
    assert memory.peak_mb - before > 150
