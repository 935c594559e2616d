"""Subcommands of the ``bench`` CLI, one module each (see ``bench.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_runs_dir(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--runs-dir DIR`` (the runs folder: default store, artifacts, outputs), the same in every subcommand; the
    old spelling ``--runs DIR`` is refused with one line naming the new one (``--runs`` names run ids)."""
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help=f"{help_text} (default: %(default)s)")
    parser.add_argument("--runs", action=_RunsIsRunIds, nargs="*", help=argparse.SUPPRESS)


class _RunsIsRunIds(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error("--runs names run ids (bench ensemble); the runs folder is --runs-dir DIR")
