"""Scoring predicted label maps: one row per case × class, a stable ``summary.json``, folder pairs.

Rows hold ``case, class, dice, avd, hd, hd95, assd, ref_voxels, pred_voxels``, one per scored class of the
dataset's label set (``bench.data.labels.LabelSet``; ``class`` is its name), avd in percent, distances in
mm (see ``bench.evaluation.metrics`` for definitions and the empty-mask rule). The summary follows
nnU-Net's ``summary.json``: per-case rows, then mean / std / median per class and metric, computed over
finite values only, with the number of non-finite values (empty masks) reported next to them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from bench.data.labels import IBSR_LABELS, LabelSet
from bench.errors import DataError
from bench.evaluation.metrics import (
    EMPTY_MASK_RULE,
    METRIC_NAMES,
    Backend,
    Hd95Mode,
    evaluate_labels,
)
from bench.io import Volume, read_volume, write_atomic, write_text_atomic
from bench.types import LabelArray

SPACING_TOLERANCE_MM: Final = 1e-3
LOOKUP_LIMIT: Final = 65535
"""Largest stored label value mapped to class indices through a lookup table (larger ones are sorted)."""
ROW_COLUMNS: Final = ("case", "class", *METRIC_NAMES, "ref_voxels", "pred_voxels")
NIFTI_SUFFIXES: Final = (".nii.gz", ".nii")
MATCHING_RULE: Final = (
    "case id = file name without .nii.gz/.nii and without a trailing '_seg'; a prediction is paired with the "
    "reference of the same case id; in the reference folder X_seg.nii.gz wins over X.nii.gz (X.nii.gz is then "
    "taken to be the image), and subject folders X/X_seg.nii.gz (IBSR layout) are searched too"
)
SUMMARY_RULES: Final = {
    "empty_masks": EMPTY_MASK_RULE,
    "averaging": "mean, std (sample, ddof=1) and median over finite values only; n_nonfinite counts the rest",
    "units": "dice: fraction; avd: percent of the reference volume; hd, hd95, assd: mm",
}


def evaluate_case(
    pred: Volume,
    ref: Volume,
    case_id: str,
    *,
    labels: LabelSet = IBSR_LABELS,
    pred_path: str | Path | None = None,
    ref_path: str | Path | None = None,
    backend: Backend = "fast",
    hd95_mode: Hd95Mode = "pooled",
) -> list[dict[str, Any]]:
    """Score one predicted label map against its reference, one row per scored class of ``labels``.

    Args:
        pred: Predicted label map holding ``labels``' stored values.
        ref: Reference label map on the same grid, the same values.
        case_id: Written to the ``case`` column.
        labels: The dataset's label set (default IBSR's: 0 background, 1 CSF, 2 GM, 3 WM). Maps that already
            hold class indices 0..K-1 are scored with ``labels.as_indices()``.
        pred_path: File of the prediction, named in errors.
        ref_path: File of the reference, named in errors.
        backend: ``"fast"`` or ``"medpy"`` (see ``bench.evaluation.metrics.evaluate_labels``).
        hd95_mode: ``"pooled"`` or ``"max_directed"``.

    Returns:
        Rows ``{case, class, dice, avd, hd, hd95, assd, ref_voxels, pred_voxels}``, one per class of
        ``labels.scored`` in that order (``class`` is the class name).

    Raises:
        DataError: Shapes or spacings (tolerance 1e-3 mm) differ, or a map holds a value that is not in ``labels``.
    """
    pred_name = str(pred_path) if pred_path is not None else "prediction"
    ref_name = str(ref_path) if ref_path is not None else "reference"
    _check_same_grid(pred, ref, pred_name, ref_name)
    pred_indices, pred_counts = _class_indices(pred.array, labels, pred_path, "prediction")
    ref_indices, ref_counts = _class_indices(ref.array, labels, ref_path, "reference")
    scores = evaluate_labels(
        pred_indices,
        ref_indices,
        ref.spacing_mm,
        classes=labels.scored_indices,
        hd95_mode=hd95_mode,
        backend=backend,
        labels=labels.as_indices(),
    )
    return [
        {
            "case": case_id,
            "class": name,
            **scores[name],
            "ref_voxels": int(ref_counts[index]),
            "pred_voxels": int(pred_counts[index]),
        }
        for index, name in zip(labels.scored_indices, labels.scored, strict=True)
    ]


def _check_same_grid(pred: Volume, ref: Volume, pred_name: str, ref_name: str) -> None:
    if pred.shape != ref.shape:
        raise DataError(
            f"prediction {pred_name} has shape {pred.shape} but reference {ref_name} has shape {ref.shape}",
            fix="resample the prediction onto the reference grid",
        )
    if not np.allclose(pred.spacing_mm, ref.spacing_mm, rtol=0.0, atol=SPACING_TOLERANCE_MM):
        raise DataError(
            f"prediction {pred_name} has spacing {_fmt_spacing(pred.spacing_mm)} mm but reference {ref_name} "
            f"has spacing {_fmt_spacing(ref.spacing_mm)} mm (tolerance {SPACING_TOLERANCE_MM} mm)",
            fix="resample the prediction onto the reference grid",
        )


def _class_indices(
    array: np.ndarray, labels: LabelSet, path: str | Path | None, role: str
) -> tuple[LabelArray, np.ndarray]:
    """The map as class indices plus its voxel count per class; a value outside ``labels`` is a DataError.

    Stored values up to ``LOOKUP_LIMIT`` are counted and mapped through a table; larger ones by sorting.
    """
    known = f"the labels are {labels.describe()}"
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{role} label map has dtype {array.dtype}; {known}", path=path)
    if array.size == 0:
        raise DataError(f"{role} label map is empty (no voxels)", path=path)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DataError(f"{role} label map holds non-integer values; {known}", path=path)
        array = array.astype(np.int64)
    values = np.asarray(labels.values)
    top = int(values.max())
    inverse = None
    if top <= LOOKUP_LIMIT and int(array.min()) >= 0 and int(array.max()) <= top:
        by_value = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=top + 1)
        present = np.flatnonzero(by_value)
    else:
        present, inverse, present_counts = np.unique(array, return_inverse=True, return_counts=True)
    unknown = [int(v) for v in present if int(v) not in labels.values][:10]
    if unknown:
        raise DataError(
            f"{role} label map holds values {unknown} that are not labels of this dataset; {known}",
            path=path,
            fix="pass a label map of this dataset (not an image or probabilities), or give its label set "
            "(bench evaluate --labels)",
        )
    if inverse is None:
        indices = array if labels.contiguous else labels.to_indices(array)
        return indices, by_value[values]
    index_of_present = np.asarray([labels.values.index(int(v)) for v in present], dtype=np.uint8)
    counts = np.zeros(labels.num_classes, dtype=np.int64)
    counts[index_of_present] = present_counts
    return index_of_present[inverse.reshape(array.shape)], counts


def _fmt_spacing(spacing: Sequence[float]) -> str:
    return "(" + ", ".join(f"{s:.4g}" for s in spacing) + ")"


# --------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------


def summarize(rows: Iterable[Mapping[str, Any]], labels: LabelSet | None = None) -> dict[str, Any]:
    """An nnU-Net-like summary of per-case rows (with ``labels``: also ``"labels": labels.record()``).

    Returns:
        ``{"metric_per_case": rows, "mean": {class: {metric: value}}, "std": ..., "median": ...,
        "n_nonfinite": {class: {metric: count}}, "foreground_mean": {metric: mean of the class means},
        "n_cases": number of distinct cases, "rules": {"empty_masks": ..., "averaging": ..., "units": ...}}``.
        Statistics use finite values only; a class/metric without any finite value gets nan (``null`` in
        JSON), as does a std of fewer than two values.
    """
    table = pd.DataFrame(list(rows), columns=list(ROW_COLUMNS))
    classes = list(dict.fromkeys(table["class"].tolist()))
    stats: dict[str, dict[str, dict[str, float]]] = {"mean": {}, "std": {}, "median": {}}
    nonfinite: dict[str, dict[str, int]] = {}
    for name in classes:
        part = table[table["class"] == name]
        for key in stats:
            stats[key][name] = {}
        nonfinite[name] = {}
        for metric in METRIC_NAMES:
            values = part[metric].to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            stats["mean"][name][metric] = float(finite.mean()) if finite.size else math.nan
            stats["std"][name][metric] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
            stats["median"][name][metric] = float(np.median(finite)) if finite.size else math.nan
            nonfinite[name][metric] = int(values.size - finite.size)
    foreground = {
        metric: _mean_finite([stats["mean"][name][metric] for name in classes]) for metric in METRIC_NAMES
    }
    return {
        "metric_per_case": table.to_dict(orient="records"),
        **stats,
        "n_nonfinite": nonfinite,
        "foreground_mean": foreground,
        "n_cases": int(table["case"].nunique()),
        "rules": dict(SUMMARY_RULES),
        **({} if labels is None else {"labels": labels.record()}),
    }


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def to_json_safe(value: Any) -> Any:
    """A copy with numpy scalars made plain and non-finite floats (inf, nan) replaced by ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Write a summary as valid JSON (inf/nan as ``null``), atomically (temporary file, then rename)."""
    text = json.dumps(to_json_safe(summary), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text)



# --------------------------------------------------------------------------------------------------------
# Folder pairs
# --------------------------------------------------------------------------------------------------------


def case_id_of(path: Path) -> str:
    """File name without ``.nii.gz``/``.nii`` and without a trailing ``_seg``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.removesuffix("_seg")


def match_files(
    pred_dir: str | Path, ref_dir: str | Path, *, strict: bool = True
) -> list[tuple[str, Path, Path]]:
    """Pair predictions with references by case id (see ``MATCHING_RULE``).

    Args:
        pred_dir: Folder of predicted label maps (``*.nii.gz`` / ``*.nii``).
        ref_dir: Folder of references, flat or one subfolder per subject.
        strict: Also refuse references that have no prediction (otherwise they are skipped).

    Returns:
        ``(case id, prediction path, reference path)`` sorted by case id.

    Raises:
        DataError: A folder is missing, holds no NIfTI files, two predictions share a case id, or files are
            left unmatched (all of them are listed).
    """
    preds = _predictions(_existing_dir(pred_dir, "prediction"))
    refs = _references(_existing_dir(ref_dir, "reference"))
    if not preds:
        raise DataError("no prediction files (*.nii.gz, *.nii) in the folder", path=pred_dir)
    if not refs:
        raise DataError("no reference files (*.nii.gz, *.nii, X/X_seg.nii.gz) in the folder", path=ref_dir)
    no_ref = sorted(set(preds) - set(refs))
    no_pred = sorted(set(refs) - set(preds)) if strict else []
    if no_ref or no_pred:
        parts = []
        if no_ref:
            parts.append(
                f"predictions without a reference in {ref_dir}: {', '.join(str(preds[c]) for c in no_ref)}"
            )
        if no_pred:
            parts.append(
                f"references without a prediction in {pred_dir}: {', '.join(str(refs[c]) for c in no_pred)}"
            )
        raise DataError("; ".join(parts), fix=f"files are paired by case id: {MATCHING_RULE}")
    return [(case, preds[case], refs[case]) for case in sorted(preds)]


def _existing_dir(folder: str | Path, role: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{role} folder does not exist or is not a folder", path=path)
    return path


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES)
    )


def _predictions(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in _nifti_files(folder):
        case = case_id_of(path)
        if case in found:
            raise DataError(
                f"two predictions for case {case!r}: {found[case].name} and {path.name}",
                path=folder,
                fix="keep one label map per case",
            )
        found[case] = path
    return found


def _references(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in _nifti_files(folder):
        case = case_id_of(path)
        if case not in found or path.name.removesuffix(".gz").removesuffix(".nii").endswith("_seg"):
            found[case] = path  # X_seg wins over X
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in found):
        for suffix in NIFTI_SUFFIXES:
            candidate = sub / f"{sub.name}_seg{suffix}"
            if candidate.is_file():
                found[sub.name] = candidate
                break
    return found


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out_csv: str | Path | None,
    backend: Backend = "fast",
    *,
    hd95_mode: Hd95Mode = "pooled",
    strict: bool = True,
    labels: LabelSet = IBSR_LABELS,
) -> pd.DataFrame:
    """Score every prediction in ``pred_dir`` against its reference in ``ref_dir`` (see ``match_files``).

    Args:
        pred_dir: Folder of predicted label maps.
        ref_dir: Folder of reference label maps (flat, or IBSR-style ``X/X_seg.nii.gz``).
        out_csv: Where to write the table (atomically); ``None`` writes nothing.
        backend: ``"fast"`` or ``"medpy"``.
        hd95_mode: ``"pooled"`` or ``"max_directed"``.
        strict: Refuse references without a prediction (otherwise they are skipped).
        labels: The label set both folders' maps use (default IBSR's).

    Returns:
        One row per case × class with the columns ``ROW_COLUMNS``.

    Raises:
        DataError: Unmatched or unreadable files, mismatched grids, values that are not in ``labels``.
    """
    rows: list[dict[str, Any]] = []
    for case, pred_path, ref_path in match_files(pred_dir, ref_dir, strict=strict):
        rows += evaluate_case(
            read_volume(pred_path),
            read_volume(ref_path),
            case,
            labels=labels,
            pred_path=pred_path,
            ref_path=ref_path,
            backend=backend,
            hd95_mode=hd95_mode,
        )
    table = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    if out_csv is not None:
        write_atomic(out_csv, lambda tmp: table.to_csv(tmp, index=False))
    return table


SUMMARY_METRICS = ("dice", "avd", "hd", "hd95", "assd")
"""The per-class means a run logs to MLflow as ``test_<metric>_<class>``."""


def mean_test_metrics(summary: Mapping[str, Any], labels: LabelSet | None = None) -> dict[str, float]:
    """``test_<metric>_<class>``: the per-class means of a summary, as logged to MLflow.

    The classes are ``labels.scored``, else those of ``summary["labels"]`` when the summary records its label
    set, else the classes of ``summary["mean"]`` in their order; a class the summary lacks is left out.
    """
    if labels is None and summary.get("labels") is not None:
        labels = summary_labels(summary)
    classes = list(summary["mean"]) if labels is None else list(labels.scored)
    out = {}
    for cls_name in classes:
        for metric in SUMMARY_METRICS:
            value = summary["mean"].get(cls_name, {}).get(metric)
            if value is not None:
                out[f"test_{metric}_{cls_name}"] = float(value)
    return out


def summary_labels(summary: Mapping[str, Any]) -> LabelSet:
    """The label set a ``summary.json`` records (``"labels"``); IBSR's for summaries written before label sets."""
    return LabelSet.from_record(summary.get("labels"))
