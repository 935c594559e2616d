"""The ``bench`` command line: one subcommand per module in ``bench/commands``.

Every subcommand has ``--help``. A ``BenchError`` (bad input or config) prints one line
``error: ...`` and exits with code 2; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bench.errors import BenchError
from bench.processes import interruption, stop_signals_raise

# Each module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = (
    "bench.commands.data",
    "bench.commands.synth",
    "bench.commands.convert",
    "bench.commands.evaluate",
    "bench.commands.models",
    "bench.commands.train_speed",
    "bench.commands.report",
    "bench.commands.compare",
    "bench.commands.stack",
    "bench.commands.predict",
    "bench.commands.register",
    "bench.commands.ensemble",
    "bench.commands.runs",
    "bench.commands.env",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="brainbench: benchmark patch-based brain MRI segmentation (IBSR18's CSF/GM/WM, or any nnU-Net dataset).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        command = module.add_parser(sub)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with stop_signals_raise():
            return int(args._run(args) or 0)
    except BenchError as exc:
        if debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP as Terminated
        if debug:
            raise
        why, code = interruption(exc)
        print(f"error: {why}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
