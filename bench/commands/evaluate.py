"""``bench evaluate``: score predicted label maps against references (Dice, AVD, HD, HD95, ASSD).

One pair::

    bench evaluate --pred pred.nii.gz --ref ref_seg.nii.gz [--json] [--backend fast|medpy]
                   [--hd95-mode pooled|max_directed]

A folder pair (one row per subject × class, written atomically as CSV)::

    bench evaluate --pred-dir predictions/ --ref-dir references/ --out table.csv [--summary summary.json]

The label set (``--labels``; default IBSR's 0 background, 1 CSF, 2 GM, 3 WM) is a dataset's ``dataset.json``
(nnU-Net v2 ``{"name": value}`` or Decathlon ``{"value": "name"}``) or inline ``background=0,CSF=1,lesion=10``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data.labels import IBSR_LABELS, LabelSet
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
            "Score predicted label maps against references, per class of the label set (--labels; default IBSR's: "
            "0 background, 1 CSF, 2 GM, 3 WM; the background is not scored): Dice, AVD (percent), Hausdorff, HD95 "
            "and ASSD (mm), as medpy 0.5.2 defines them. Give --pred/--ref for one pair, or "
            "--pred-dir/--ref-dir/--out for a folder pair."
        ),
    )
    parser.add_argument(
        "--labels",
        default=None,
        metavar="DATASET_JSON|NAME=VALUE,...",
        help="the maps' label set: an nnU-Net v2 or Decathlon dataset.json (or its folder), or inline "
        "name=value pairs, the background at value 0, e.g. background=0,CSF=1,lesion=10 (default: IBSR's "
        "background=0,CSF=1,GM=2,WM=3)",
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
    labels = parse_labels(args.labels)
    if single and folders:
        raise ConfigError(
            "--pred/--ref cannot be combined with --pred-dir/--ref-dir/--out/--summary/--partial",
            fix="score one pair or one folder pair per call",
        )
    if single:
        return _run_single(args, labels)
    if folders:
        return _run_folders(args, labels)
    raise ConfigError("nothing to evaluate", fix="give --pred and --ref, or --pred-dir, --ref-dir and --out")


def _run_single(args: argparse.Namespace, labels: LabelSet) -> int:
    if args.pred is None or args.ref is None:
        missing = "--ref" if args.pred is not None else "--pred"
        raise ConfigError(f"{missing} is missing", fix="give both --pred and --ref")
    rows = evaluate_case(
        read_volume(args.pred),
        read_volume(args.ref),
        case_id_of(args.pred),
        labels=labels,
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


def _run_folders(args: argparse.Namespace, labels: LabelSet) -> int:
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
        args.pred_dir,
        args.ref_dir,
        args.out,
        args.backend,
        hd95_mode=args.hd95_mode,
        strict=not args.partial,
        labels=labels,
    )
    rows = table.to_dict(orient="records")
    if args.summary is not None:
        write_summary(summarize(rows, labels=None if args.labels is None else labels), args.summary)
    print(format_table(rows))
    print(f"wrote {args.out} ({table['case'].nunique()} cases)")
    return 0


def parse_labels(value: str | None) -> LabelSet:
    """``--labels``: a ``dataset.json`` (or the folder holding one), or inline ``name=value,...``; None: IBSR's.

    Raises:
        ConfigError: No such file, unreadable JSON, no ``labels`` in it, a malformed pair, or a label set that
            ``LabelSet`` refuses (no background 0, repeated values, region labels, ...).
    """
    if value is None:
        return IBSR_LABELS
    path = Path(value)
    if path.is_dir():
        path = path / "dataset.json"
    if path.is_file():
        return _labels_from_json(path)
    if "=" not in value:
        raise ConfigError(f"--labels {value!r}: no such file", fix="give a dataset.json, or name=value pairs "
                          "with the background at value 0, e.g. background=0,CSF=1,lesion=10")
    mapping: dict[str, int] = {}
    for pair in value.split(","):
        name, _, number = (part.strip() for part in pair.partition("="))
        if not name or not number.isdigit():
            raise ConfigError(f"--labels {value!r}: {pair.strip()!r} is not name=value with an integer value >= 0",
                              fix="e.g. background=0,CSF=1,lesion=10")
        if name in mapping:
            raise ConfigError(f"--labels {value!r} names {name!r} twice", fix="give every class one value")
        mapping[name] = int(number)
    return _label_set(mapping, f"--labels {value!r}")


def _labels_from_json(path: Path) -> LabelSet:
    """The ``labels`` of an nnU-Net v2 (``{"name": value}``) or Decathlon (``{"value": "name"}``) dataset.json."""
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--labels {str(path)!r} is not readable JSON ({exc})",
                          fix="give an nnU-Net or Decathlon dataset.json") from None
    labels = info.get("labels") if isinstance(info, Mapping) else None
    if not isinstance(labels, Mapping) or not labels:
        raise ConfigError(f"--labels {str(path)!r} has no \"labels\" mapping",
                          fix='an nnU-Net dataset.json has "labels": {"background": 0, ...}')
    source = f"--labels {str(path)!r}"
    if all(isinstance(v, str) for v in labels.values()):  # Decathlon: value -> name
        bad = [k for k in labels if not str(k).strip().isdigit()]
        if bad:
            raise ConfigError(f"{source}: Decathlon labels need integer keys, not {bad[:5]}",
                              fix='e.g. "labels": {"0": "background", "1": "edema"}')
        repeated = sorted({n for n in labels.values() if list(labels.values()).count(n) > 1})
        if repeated:
            raise ConfigError(f"{source} repeats the class name {', '.join(map(repr, repeated))}",
                              fix="give every class its own name")
        return _label_set({name: int(key) for key, name in labels.items()}, source)
    return _label_set(labels, source)


def _label_set(mapping: Mapping[str, Any], source: str) -> LabelSet:
    """``LabelSet.from_mapping``, its errors naming ``source`` (the --labels value)."""
    if any(str(name).lower() == "ignore" for name in mapping):
        raise ConfigError(f"{source} has an 'ignore' label (nnU-Net's sparse annotation); scoring that leaves "
                          "voxels out is not supported", fix="remove the ignore label and label every voxel")
    try:
        return LabelSet.from_mapping(mapping, source=source)
    except ConfigError as exc:
        if exc.problem.startswith(source):
            raise
        raise ConfigError(f"{source}: {exc.problem}", fix=exc.fix) from None


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
