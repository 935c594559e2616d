"""``bench evaluate``: score predicted label maps against references (Dice, AVD, HD, HD95, ASSD).

One pair::

    bench evaluate --pred pred.nii.gz --ref ref_seg.nii.gz [--json] [--backend fast|medpy]
                   [--hd95-mode pooled|max_directed]

A folder pair (one row per subject × class, written atomically as CSV)::

    bench evaluate --pred-dir predictions/ --ref-dir references/ --out table.csv [--summary summary.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.evaluation.evaluate import (
    MATCHING_RULE,
    case_id_of,
    evaluate_case,
    evaluate_folders,
    summarize,
    to_json_safe,
    write_summary,
)
from bench.evaluation.metrics import BACKENDS, HD95_MODES, METRIC_NAMES
from bench.io import read_volume

_UNITS = {"dice": "", "avd": "%", "hd": "mm", "hd95": "mm", "assd": "mm"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="score predicted label maps against references",
        description=(
            "Score predicted label maps (0 background, 1 CSF, 2 GM, 3 WM) against references: Dice, AVD (percent), "
            "Hausdorff, HD95 and ASSD (mm), as medpy 0.5.2 defines them. Give --pred/--ref for one pair, or "
            "--pred-dir/--ref-dir/--out for a folder pair."
        ),
    )
    single = parser.add_argument_group("one pair")
    single.add_argument("--pred", type=Path, help="predicted label map (NIfTI)")
    single.add_argument("--ref", type=Path, help="reference label map (NIfTI)")
    single.add_argument(
        "--json", action="store_true", help="print {class: {metric: value}} as JSON (inf as null)"
    )
    folders = parser.add_argument_group("folder pair")
    folders.add_argument("--pred-dir", type=Path, help="folder of predicted label maps")
    folders.add_argument("--ref-dir", type=Path, help=f"folder of references; pairing: {MATCHING_RULE}")
    folders.add_argument("--out", type=Path, help="CSV to write (one row per case × class)")
    folders.add_argument("--summary", type=Path, help="also write summary.json (means, std, medians) here")
    folders.add_argument(
        "--partial", action="store_true", help="skip references that have no prediction instead of failing"
    )
    parser.add_argument(
        "--backend", default="fast", choices=BACKENDS, help="metric implementation (default fast)"
    )
    parser.add_argument(
        "--hd95-mode", default="pooled", choices=HD95_MODES, help="HD95 definition (default pooled)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    single = args.pred is not None or args.ref is not None
    folders = (
        any(v is not None for v in (args.pred_dir, args.ref_dir, args.out, args.summary)) or args.partial
    )
    if single and folders:
        raise ConfigError(
            "--pred/--ref cannot be combined with --pred-dir/--ref-dir/--out/--summary/--partial",
            fix="score one pair or one folder pair per call",
        )
    if single:
        return _run_single(args)
    if folders:
        return _run_folders(args)
    raise ConfigError("nothing to evaluate", fix="give --pred and --ref, or --pred-dir, --ref-dir and --out")


def _run_single(args: argparse.Namespace) -> int:
    if args.pred is None or args.ref is None:
        missing = "--ref" if args.pred is not None else "--pred"
        raise ConfigError(f"{missing} is missing", fix="give both --pred and --ref")
    rows = evaluate_case(
        read_volume(args.pred),
        read_volume(args.ref),
        case_id_of(args.pred),
        pred_path=args.pred,
        ref_path=args.ref,
        backend=args.backend,
        hd95_mode=args.hd95_mode,
    )
    if args.json:
        scores = {row["class"]: {m: row[m] for m in METRIC_NAMES} for row in rows}
        print(json.dumps(to_json_safe(scores), allow_nan=False))
    else:
        print(format_table(rows))
    return 0


def _run_folders(args: argparse.Namespace) -> int:
    if args.json:
        raise ConfigError("--json applies to one pair (--pred/--ref)", fix="use --summary for a folder pair")
    missing = [
        flag
        for flag, value in (("--pred-dir", args.pred_dir), ("--ref-dir", args.ref_dir), ("--out", args.out))
        if value is None
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} missing", fix="a folder pair needs --pred-dir, --ref-dir and --out"
        )
    table = evaluate_folders(
        args.pred_dir, args.ref_dir, args.out, args.backend, hd95_mode=args.hd95_mode, strict=not args.partial
    )
    rows = table.to_dict(orient="records")
    if args.summary is not None:
        write_summary(summarize(rows), args.summary)
    print(format_table(rows))
    print(f"wrote {args.out} ({table['case'].nunique()} cases)")
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one line per row (case and class, then the five metrics)."""
    header = ["case", "class", *(f"{m}" + (f" ({_UNITS[m]})" if _UNITS[m] else "") for m in METRIC_NAMES)]
    lines = [[str(row["case"]), str(row["class"]), *(_fmt(row[m]) for m in METRIC_NAMES)] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    render = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        for cells in [header, *lines]
    ]
    return "\n".join(render)


def _fmt(value: float) -> str:
    return f"{value:.4f}"
