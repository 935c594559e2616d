"""``bench data``: list the subjects of a dataset root and check every file."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.data.cohort import CLASS_COLUMNS, describe_cohort, load_cohort
from bench.data.splits import NAMED_SPLITS, SPLITS

COLUMNS = ("id", "split", "shape", "spacing_mm", *CLASS_COLUMNS)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="list and check the subjects of a dataset",
        description="Discover a dataset (course layout Training_Set/Validation_Set/Test_Set/<id>/<id>.nii.gz "
        "or flat layout <id>/<id>.nii.gz), assign a split, read and check every file, and print one row "
        "per subject (shape, spacing, voxels per class). Exits 2 naming the file when something is wrong.",
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    parser.add_argument(
        "--split",
        choices=NAMED_SPLITS,
        default="paper",  # the config's default (conf/data/*.yaml)
        help="course: Training_Set/Validation_Set/Test_Set as train/test/predict; paper: IBSR_07 and "
        "IBSR_16 validate; holdout: for copies without Validation_Set (default: %(default)s)",
    )
    return parser


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "×".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain text table, columns aligned (numbers right-aligned)."""
    cells = [list(COLUMNS)] + [[_cell(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    numeric = {c for c in CLASS_COLUMNS}
    lines = []
    for r in cells:
        parts = [v.rjust(w) if c in numeric else v.ljust(w) for v, w, c in zip(r, widths, COLUMNS, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per non-empty split: subject count, labelled count, spacings."""
    lines = []
    for split in SPLITS:
        members = [r for r in rows if r["split"] == split]
        if not members:
            lines.append(f"{split}: 0 subjects")
            continue
        labelled = sum(r["bg"] is not None for r in members)
        spacings = Counter(_cell(r["spacing_mm"]) for r in members)
        spacing_text = ", ".join(f"{s} mm ×{n}" for s, n in spacings.items())
        lines.append(
            f"{split}: {len(members)} subjects ({labelled} labelled): "
            f"{', '.join(r['id'] for r in members)}; spacing {spacing_text}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    cohort = load_cohort(args.root, args.split)
    rows = describe_cohort(cohort)
    print(format_table(rows))
    print()
    print(f"{cohort.root} — split {cohort.split_name!r}, {len(rows)} subjects")
    for line in format_summary(rows):
        print(line)
    return 0
