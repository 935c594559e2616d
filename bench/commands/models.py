"""``bench models``: every architecture × framework with its trainable parameter count."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "models", help="list architectures × frameworks with parameter counts at default settings",
        description="Build each architecture in each framework with its default (paper) settings and print "
        "the number of trainable parameters.",
    )
    parser.add_argument("--framework", action="append", help="only this framework (repeatable)")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.training import frameworks

    chosen = args.framework or list(frameworks.FRAMEWORKS)
    print(f"{'architecture':<12} {'framework':<10} {'parameters':>12}")
    for architecture in frameworks.ARCHITECTURES:
        for framework in chosen:
            segmenter = frameworks.build(architecture, framework)
            count = int(segmenter.describe()["trainable_parameters"])
            print(f"{architecture:<12} {framework:<10} {count:>12,}", flush=True)
    return 0
