"""``bench data``: list the subjects of a dataset root (IBSR layouts or nnU-Net/Decathlon) and check every file."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.data.cohort import Cohort, class_columns, describe_cohort, load_cohort
from bench.data.folds import FoldSplit
from bench.data.nnunet import count_folds, is_nnunet_root
from bench.data.splits import NAMED_SPLITS, SPLITS
from bench.errors import ConfigError

BASE_COLUMNS = ("id", "split", "shape", "spacing_mm")
DEFAULT_FOLDS = 5


class _StoreGiven(argparse.Action):
    """Store the value and note that the option was given (``--split``'s default depends on the root)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.split_given = True


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "data",
        help="list and check the subjects of a dataset",
        description="Discover a dataset (course layout Training_Set/Validation_Set/Test_Set/<id>/<id>.nii.gz, "
        "flat layout <id>/<id>.nii.gz, or an nnU-Net v2 / Medical Segmentation Decathlon folder holding "
        "dataset.json), assign a split, read and check every file, and print one row per subject (channels, "
        "shape, spacing, voxels per class). Exits 2 naming the file when something is wrong.",
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    parser.add_argument(
        "--split",
        choices=NAMED_SPLITS,
        default="paper",  # the config's default (conf/data/*.yaml)
        action=_StoreGiven,
        help="IBSR layouts: course: Training_Set/Validation_Set/Test_Set as train/test/predict; paper: IBSR_07 "
        "and IBSR_16 validate; holdout: for copies without Validation_Set (default: %(default)s; on an nnU-Net "
        "root: --fold 0)",
    )
    parser.add_argument("--fold", type=int, default=None,
                        help="k-fold cross-validation: fold K is the test set (default on an nnU-Net root: 0)")
    parser.add_argument("--folds", type=int, default=None,
                        help=f"number of folds (default: those of the root's splits_final.json, else {DEFAULT_FOLDS})")
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (default: %(default)s)")
    parser.set_defaults(split_given=False)
    return parser


def resolve_split(args: argparse.Namespace) -> str | FoldSplit:
    """``--fold`` (or, on an nnU-Net root without ``--split``, fold 0) as a :class:`FoldSplit`, else ``--split``."""
    nnunet = is_nnunet_root(args.root)
    if args.fold is None and (args.split_given or not nnunet):
        if args.folds is not None:
            raise ConfigError(f"--folds {args.folds} needs --fold K", fix="add --fold 0 (or another fold)")
        return str(args.split)
    if args.split_given:
        raise ConfigError(f"--split {args.split} and --fold exclude each other", fix="give one of them")
    folds = args.folds if args.folds is not None else (count_folds(args.root) if nnunet else None) or DEFAULT_FOLDS
    return FoldSplit(folds=folds, fold=0 if args.fold is None else args.fold, seed=args.fold_seed)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return "×".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], numeric: Sequence[str]) -> str:
    """Plain text table, columns aligned (the ``numeric`` ones right-aligned)."""
    cells = [list(columns)] + [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        parts = [v.rjust(w) if c in numeric else v.ljust(w) for v, w, c in zip(r, widths, columns, strict=True)]
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
        labelled = sum(bool(r["labelled"]) for r in members)
        spacings = Counter(_cell(r["spacing_mm"]) for r in members)
        spacing_text = ", ".join(f"{s} mm ×{n}" for s, n in spacings.items())
        lines.append(
            f"{split}: {len(members)} subjects ({labelled} labelled): "
            f"{', '.join(r['id'] for r in members)}; spacing {spacing_text}"
        )
    return lines


def dataset_line(cohort: Cohort) -> str:
    """``channels: 0 T1, 1 FLAIR; labels: 0 background, 1 CSF, ...`` (shown for nnU-Net roots)."""
    channels = ", ".join(f"{c} {name}" for c, name in enumerate(cohort.channel_names))
    return f"channels: {channels}; labels: {cohort.labels.describe()}"


def run(args: argparse.Namespace) -> int:
    nnunet = is_nnunet_root(args.root)
    cohort = load_cohort(args.root, resolve_split(args))
    rows = describe_cohort(cohort, ibsr_columns=not nnunet)
    classes = class_columns(cohort.labels, ibsr=not nnunet)
    columns = (*BASE_COLUMNS[:2], "channels", *BASE_COLUMNS[2:]) if nnunet else BASE_COLUMNS
    print(format_table(rows, (*columns, *classes), numeric=("channels", *classes)))
    print()
    print(f"{cohort.root} — split {cohort.split_name!r}, {len(rows)} subjects")
    if nnunet:
        print(dataset_line(cohort))
    for line in format_summary(rows):
        print(line)
    return 0
