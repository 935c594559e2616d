"""The one exception type users see: every bad input becomes a ``BenchError`` with a clear message."""

from __future__ import annotations

from pathlib import Path

from bench.redact import hide_password


class BenchError(Exception):
    """A problem with the user's input, data or configuration.

    The CLI prints ``error: <message>`` on one line and exits with code 2 (a traceback only with ``--debug``).
    A URI's password in the message is shown as ``***`` (:func:`bench.redact.hide_password`).

    Args:
        problem: What is wrong, naming the bad value.
        path: The file or folder concerned, if any.
        fix: What the user can do about it, if obvious.
    """

    def __init__(self, problem: str, *, path: str | Path | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else Path(path)
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path is not None else self.problem
        return hide_password(f"{text} ({self.fix})" if self.fix else text)


class ConfigError(BenchError):
    """A bad configuration value (names the setting and the value)."""


class DataError(BenchError):
    """A bad or missing data file (names the file)."""
