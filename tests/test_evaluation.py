"""Tests for bench.evaluation.evaluate and the ``bench evaluate`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bench.cli import main
from bench.data.labels import LabelSet
from bench.errors import DataError
from bench.evaluation.evaluate import (
    ROW_COLUMNS,
    case_id_of,
    evaluate_case,
    evaluate_folders,
    match_files,
    mean_test_metrics,
    summarize,
    write_summary,
)
from bench.evaluation.metrics import class_name, evaluate_labels
from bench.io import Volume, read_volume, write_volume

SHAPE = (24, 20, 22)
SPACING = (0.9375, 1.5, 0.9375)


def label_map(seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A 0..3 label map from a smooth random field cut at three quantiles."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    return np.digitize(field, np.quantile(field, [0.4, 0.6, 0.8])).astype(np.uint8)


def perturbed(labels: np.ndarray, seed: int) -> np.ndarray:
    out = labels.copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(out.shape) < 0.05
    out[flip] = rng.integers(0, 4, int(flip.sum()))
    return out


def volume(array: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> Volume:
    return Volume(array=array, spacing_mm=spacing)


def strict_json(text: str) -> Any:
    """Parse JSON refusing NaN/Infinity (Python's json accepts them by default)."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------- evaluate_case


def test_evaluate_case_rows_match_metrics_and_counts() -> None:
    ref = label_map(0)
    pred = perturbed(ref, 1)
    rows = evaluate_case(volume(pred), volume(ref), "s01")
    expected = evaluate_labels(pred, ref, SPACING)
    assert [r["class"] for r in rows] == ["CSF", "GM", "WM"]
    for row, label in zip(rows, (1, 2, 3), strict=True):
        assert tuple(row) == ROW_COLUMNS
        assert row["case"] == "s01"
        assert {m: row[m] for m in ("dice", "avd", "hd", "hd95", "assd")} == expected[row["class"]]
        assert row["ref_voxels"] == int(np.count_nonzero(ref == label))
        assert row["pred_voxels"] == int(np.count_nonzero(pred == label))
        assert 0.0 < row["dice"] < 1.0


def test_evaluate_case_medpy_backend_agrees() -> None:
    ref = label_map(2)
    pred = perturbed(ref, 3)
    fast = evaluate_case(volume(pred), volume(ref), "c")
    slow = evaluate_case(volume(pred), volume(ref), "c", backend="medpy")
    for a, b in zip(fast, slow, strict=True):
        for metric in ("dice", "avd", "hd", "hd95", "assd"):
            assert a[metric] == pytest.approx(b[metric], abs=1e-6)


def test_shape_mismatch_names_both_files_and_shapes() -> None:
    pred, ref = volume(label_map(4)), volume(label_map(4, (24, 20, 21)))
    with pytest.raises(DataError) as info:
        evaluate_case(pred, ref, "c", pred_path="p/case.nii.gz", ref_path="r/case_seg.nii.gz")
    message = info.value.message
    assert "p/case.nii.gz" in message and "r/case_seg.nii.gz" in message
    assert "(24, 20, 22)" in message and "(24, 20, 21)" in message


def test_spacing_mismatch_names_both_files_and_spacings() -> None:
    labels = label_map(5)
    with pytest.raises(DataError) as info:
        evaluate_case(
            volume(labels, (1.0, 1.5, 1.0)),
            volume(labels, (1.0, 1.5, 1.2)),
            "c",
            pred_path="pred.nii.gz",
            ref_path="ref.nii.gz",
        )
    message = info.value.message
    assert "pred.nii.gz" in message and "ref.nii.gz" in message
    assert "(1, 1.5, 1)" in message and "(1, 1.5, 1.2)" in message
    # within the 1e-3 mm tolerance: accepted
    rows = evaluate_case(volume(labels, (1.0, 1.5, 1.0)), volume(labels, (1.0005, 1.5, 1.0)), "c")
    assert all(row["dice"] == 1.0 for row in rows)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda a: np.where(a == 3, 4, a), r"\[4\]"),
        (lambda a: np.where(a == 3, -1, a.astype(np.int16)), r"\[-1\]"),
        (lambda a: a.astype(np.float32) + 0.5, "non-integer"),
    ],
)
def test_labels_outside_range_are_refused(bad: Any, match: str) -> None:
    ref = label_map(6)
    with pytest.raises(DataError, match=match) as info:
        evaluate_case(volume(bad(ref)), volume(ref), "c", pred_path="bad_pred.nii.gz")
    assert "bad_pred.nii.gz" in info.value.message
    with pytest.raises(DataError, match="reference"):
        evaluate_case(volume(ref), volume(bad(ref)), "c")


def test_integral_float_label_maps_are_accepted() -> None:
    ref = label_map(7)
    rows = evaluate_case(volume(ref.astype(np.float32)), volume(ref), "c")
    assert [row["dice"] for row in rows] == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------- summary


def rows_with_empty_class() -> list[dict[str, Any]]:
    """Three cases; in case b the prediction has no CSF (avd 100, distances inf)."""
    rows: list[dict[str, Any]] = []
    for seed, case in enumerate(("a", "b", "c")):
        ref = label_map(10 + seed)
        pred = perturbed(ref, 20 + seed)
        if case == "b":
            pred[pred == 1] = 0
        rows += evaluate_case(volume(pred), volume(ref), case)
    return rows


def test_summary_structure_statistics_and_valid_json(tmp_path: Path) -> None:
    rows = rows_with_empty_class()
    summary = summarize(rows)
    assert summary["n_cases"] == 3
    assert set(summary) >= {
        "metric_per_case",
        "mean",
        "std",
        "median",
        "n_nonfinite",
        "foreground_mean",
        "rules",
    }
    assert "both masks empty" in summary["rules"]["empty_masks"]
    assert len(summary["metric_per_case"]) == 9
    csf = [r for r in rows if r["class"] == "CSF"]
    assert math.isinf(csf[1]["hd"]) and csf[1]["avd"] == 100.0
    finite_hd = [csf[0]["hd"], csf[2]["hd"]]
    assert summary["mean"]["CSF"]["hd"] == pytest.approx(np.mean(finite_hd))
    assert summary["std"]["CSF"]["hd"] == pytest.approx(np.std(finite_hd, ddof=1))
    assert summary["median"]["CSF"]["hd"] == pytest.approx(np.median(finite_hd))
    assert summary["n_nonfinite"]["CSF"] == {"dice": 0, "avd": 0, "hd": 1, "hd95": 1, "assd": 1}
    assert summary["n_nonfinite"]["GM"]["hd"] == 0
    gm_dice = [r["dice"] for r in rows if r["class"] == "GM"]
    assert summary["mean"]["GM"]["dice"] == pytest.approx(np.mean(gm_dice))
    means = [summary["mean"][c]["dice"] for c in ("CSF", "GM", "WM")]
    assert summary["foreground_mean"]["dice"] == pytest.approx(np.mean(means))

    path = write_summary(summary, tmp_path / "out" / "summary.json")
    loaded = strict_json(path.read_text())
    assert loaded["metric_per_case"][3]["hd"] is None  # case b, CSF
    assert loaded["mean"]["CSF"]["hd"] == pytest.approx(np.mean(finite_hd))
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_summary_of_a_class_without_finite_values_is_null(tmp_path: Path) -> None:
    ref = label_map(30)
    pred = ref.copy()
    pred[pred == 1] = 0
    summary = summarize(evaluate_case(volume(pred), volume(ref), "only"))
    assert math.isnan(summary["mean"]["CSF"]["hd"]) and math.isnan(summary["std"]["GM"]["dice"])
    loaded = strict_json(write_summary(summary, tmp_path / "s.json").read_text())
    assert loaded["mean"]["CSF"]["hd"] is None and loaded["std"]["GM"]["dice"] is None
    assert loaded["mean"]["CSF"]["avd"] == 100.0


# ---------------------------------------------------------------------------------------------- folders


def write_pair_folders(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """pred/{a,b}.nii.gz; ref/a_seg.nii.gz + an image a.nii.gz (ignored), and IBSR-style ref/b/b_seg.nii.gz."""
    pred_dir, ref_dir = root / "pred", root / "ref"
    refs = {"a": label_map(40), "b": label_map(41)}
    for case, ref in refs.items():
        write_volume(volume(perturbed(ref, 50)), pred_dir / f"{case}.nii.gz")
    write_volume(volume(refs["a"]), ref_dir / "a_seg.nii.gz")
    write_volume(volume(np.full(SHAPE, 300, np.int16)), ref_dir / "a.nii.gz")  # an image, not a label map
    write_volume(volume(refs["b"]), ref_dir / "b" / "b_seg.nii.gz")
    write_volume(volume(np.full(SHAPE, 300, np.int16)), ref_dir / "b" / "b.nii.gz")
    return pred_dir, ref_dir, refs


def test_case_ids_and_matching_rule(tmp_path: Path) -> None:
    assert case_id_of(Path("IBSR_01_seg.nii.gz")) == "IBSR_01"
    assert case_id_of(Path("x.nii")) == "x"
    pred_dir, ref_dir, _ = write_pair_folders(tmp_path)
    pairs = match_files(pred_dir, ref_dir)
    assert [(c, p.name, r.relative_to(ref_dir).as_posix()) for c, p, r in pairs] == [
        ("a", "a.nii.gz", "a_seg.nii.gz"),
        ("b", "b.nii.gz", "b/b_seg.nii.gz"),
    ]


def test_evaluate_folders_writes_csv(tmp_path: Path) -> None:
    pred_dir, ref_dir, refs = write_pair_folders(tmp_path)
    out = tmp_path / "tables" / "table.csv"
    table = evaluate_folders(pred_dir, ref_dir, out)
    assert list(table.columns) == list(ROW_COLUMNS)
    assert list(zip(table["case"], table["class"], strict=True)) == [
        (c, k) for c in ("a", "b") for k in ("CSF", "GM", "WM")
    ]
    expected = evaluate_labels(perturbed(refs["b"], 50), refs["b"], SPACING)["WM"]
    assert table.iloc[5]["dice"] == pytest.approx(expected["dice"])
    assert table.iloc[5]["hd95"] == pytest.approx(expected["hd95"])
    pd.testing.assert_frame_equal(pd.read_csv(out), table, check_dtype=False)
    assert [p.name for p in out.parent.iterdir()] == ["table.csv"]


def test_unmatched_files_are_listed(tmp_path: Path) -> None:
    pred_dir, ref_dir, refs = write_pair_folders(tmp_path)
    write_volume(volume(refs["a"]), pred_dir / "zz.nii.gz")
    write_volume(volume(refs["a"]), ref_dir / "yy_seg.nii.gz")
    with pytest.raises(DataError) as info:
        evaluate_folders(pred_dir, ref_dir, None)
    message = info.value.message
    assert "zz.nii.gz" in message and "yy_seg.nii.gz" in message
    assert "a.nii.gz" not in message.replace("a_seg", "")
    (pred_dir / "zz.nii.gz").unlink()
    table = evaluate_folders(pred_dir, ref_dir, None, strict=False)  # yy has no prediction: skipped
    assert sorted(set(table["case"])) == ["a", "b"]


def test_no_files_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _, ref_dir, _ = write_pair_folders(tmp_path)
    with pytest.raises(DataError, match="no prediction files"):
        evaluate_folders(tmp_path / "empty", ref_dir, None)
    with pytest.raises(DataError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", ref_dir, None)


def test_duplicate_predictions_are_refused(tmp_path: Path) -> None:
    pred_dir, ref_dir, refs = write_pair_folders(tmp_path)
    write_volume(volume(refs["a"]), pred_dir / "a_seg.nii.gz")
    with pytest.raises(DataError, match=r"two predictions for case 'a'"):
        match_files(pred_dir, ref_dir)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_json_identical_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_volume(volume(label_map(60)), tmp_path / "x.nii.gz")
    assert main(["evaluate", "--pred", str(path), "--ref", str(path), "--json"]) == 0
    result = strict_json(capsys.readouterr().out)
    assert list(result) == ["CSF", "GM", "WM"]
    for scores in result.values():
        assert scores == {"dice": 1.0, "avd": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0}


def test_cli_json_empty_class_is_null_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = label_map(61)
    pred = ref.copy()
    pred[pred == 1] = 0
    ref_path = write_volume(volume(ref), tmp_path / "r_seg.nii.gz")
    pred_path = write_volume(volume(pred), tmp_path / "p.nii.gz")
    argv = ["evaluate", "--pred", str(pred_path), "--ref", str(ref_path)]
    assert main([*argv, "--json", "--backend", "medpy", "--hd95-mode", "max_directed"]) == 0
    result = strict_json(capsys.readouterr().out)
    assert result["CSF"] == {"dice": 0.0, "avd": 100.0, "hd": None, "hd95": None, "assd": None}
    assert result["GM"]["dice"] == 1.0
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["case", "class", "dice"]
    assert lines[1].split()[:4] == ["p", "CSF", "0.0000", "100.0000"]


def test_cli_mismatch_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_volume(volume(label_map(62)), tmp_path / "a.nii.gz")
    b = write_volume(volume(label_map(62, (24, 20, 20))), tmp_path / "b.nii.gz")
    assert main(["evaluate", "--pred", str(a), "--ref", str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "a.nii.gz" in err and "b.nii.gz" in err


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "nothing to evaluate"),
        (["--pred", "x.nii.gz"], "--ref is missing"),
        (["--pred", "x.nii.gz", "--ref", "y.nii.gz", "--pred-dir", "d"], "cannot be combined"),
        (["--pred-dir", "d", "--ref-dir", "e"], "--out missing"),
        (["--pred-dir", "d", "--ref-dir", "e", "--out", "t.csv", "--json"], "--json applies to one pair"),
    ],
)
def test_cli_bad_argument_combinations_exit_2(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", *argv]) == 2
    assert match in capsys.readouterr().err


def test_cli_folder_pair_writes_csv_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, ref_dir, _ = write_pair_folders(tmp_path)
    out, summary = tmp_path / "t.csv", tmp_path / "summary.json"
    argv = ["evaluate", "--pred-dir", str(pred_dir), "--ref-dir", str(ref_dir), "--out", str(out)]
    assert main([*argv, "--summary", str(summary)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 6
    assert strict_json(summary.read_text())["n_cases"] == 2


# ---------------------------------------------------------------------------------------------- any label set

LESION = LabelSet(("background", "CSF", "GM", "WM", "lesion"), (0, 1, 2, 3, 10))
"""A 5-label, non-contiguous label set (issue 36): the lesion is stored as 10."""
METRICS = ("dice", "avd", "hd", "hd95", "assd")


def lesion_map(seed: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A map of LESION's stored values: a smooth field cut at four quantiles, the top class stored as 10."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    indices = np.digitize(field, np.quantile(field, [0.35, 0.55, 0.75, 0.92]))
    return np.asarray(LESION.values, dtype=np.uint8)[indices]


def lesion_perturbed(values: np.ndarray, seed: int) -> np.ndarray:
    out = values.copy()
    rng = np.random.default_rng(seed)
    flip = rng.random(out.shape) < 0.05
    out[flip] = rng.choice(LESION.values, int(flip.sum()))
    return out


def scipy_oracle(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """Dice, AVD, HD, HD95, ASSD of two non-empty masks from counts and scipy's Euclidean distance transform."""
    structure = ndimage.generate_binary_structure(3, 1)
    pred_surface = pred & ~ndimage.binary_erosion(pred, structure, border_value=0)
    ref_surface = ref & ~ndimage.binary_erosion(ref, structure, border_value=0)
    both = np.concatenate([ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface],
                           ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]])
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    return {"dice": 2 * int((pred & ref).sum()) / (n_pred + n_ref), "avd": abs(n_pred - n_ref) / n_ref * 100,
            "hd": float(both.max()), "hd95": float(np.percentile(both, 95)), "assd": float(both.mean())}


def test_evaluate_case_scores_every_class_of_a_non_contiguous_label_set_by_stored_value() -> None:
    ref = lesion_map(70)
    pred = lesion_perturbed(ref, 71)
    rows = evaluate_case(volume(pred), volume(ref), "s", labels=LESION)
    assert [r["class"] for r in rows] == ["CSF", "GM", "WM", "lesion"]
    for row, value in zip(rows, (1, 2, 3, 10), strict=True):
        expected = scipy_oracle(pred == value, ref == value, SPACING)
        assert {m: row[m] for m in expected} == pytest.approx(expected, rel=1e-12)
        assert (row["ref_voxels"], row["pred_voxels"]) == (np.sum(ref == value), np.sum(pred == value))
    # the same maps as class indices, scored with the index label set: the same rows
    indices = evaluate_case(volume(LESION.to_indices(pred)), volume(LESION.to_indices(ref)), "s",
                            labels=LESION.as_indices())
    assert indices == rows
    medpy = evaluate_case(volume(pred), volume(ref), "s", labels=LESION, backend="medpy")
    for a, b in zip(rows, medpy, strict=True):
        assert {m: a[m] for m in METRICS} == pytest.approx({m: b[m] for m in METRICS}, abs=1e-9)


def test_large_stored_values_are_scored_like_their_class_indices() -> None:
    large = LabelSet(("background", "CSF", "GM", "WM", "lesion"), (0, 7, 70_000, 3, 100_000))  # any order after 0
    ref, pred = lesion_map(80), lesion_perturbed(lesion_map(80), 81)
    stored = [np.asarray(large.values, dtype=np.int32)[LESION.to_indices(m)] for m in (pred, ref)]
    rows = evaluate_case(volume(stored[0]), volume(stored[1]), "c", labels=large)
    assert rows == evaluate_case(volume(pred), volume(ref), "c", labels=LESION)
    stored[0][0, 0, 0] = -2
    with pytest.raises(DataError, match=r"values \[-2\].*0 background, 7 CSF, 70000 GM, 3 WM, 100000 lesion"):
        evaluate_case(volume(stored[0]), volume(stored[1]), "c", labels=large)


def test_a_lesion_voxel_three_slices_away_by_hand() -> None:
    ref = np.zeros((6, 6, 8), np.uint8)
    pred = ref.copy()
    ref[2, 2, 2] = 10
    pred[2, 2, 5] = 10  # 3 voxels of 2 mm along z: 6 mm away; the same volume
    pred[0, 0, 0] = 3  # WM predicted where the reference has none
    (csf, gm, wm, lesion) = evaluate_case(volume(pred, (1.0, 1.0, 2.0)), volume(ref, (1.0, 1.0, 2.0)), "c",
                                          labels=LESION)
    assert lesion == {"case": "c", "class": "lesion", "dice": 0.0, "avd": 0.0, "hd": 6.0, "hd95": 6.0,
                      "assd": 6.0, "ref_voxels": 1, "pred_voxels": 1}
    assert csf["dice"] == gm["dice"] == 1.0 and csf["hd"] == 0.0  # both empty
    assert wm["dice"] == 0.0 and math.isinf(wm["avd"]) and math.isinf(wm["hd"])  # reference empty


def test_a_value_outside_the_label_set_names_the_file_the_values_and_the_labels() -> None:
    ref = lesion_map(72)
    bad = ref.copy()
    bad[0, 0, :2] = (4, 11)  # 4 is the lesion's class index, not a stored value
    with pytest.raises(DataError) as info:
        evaluate_case(volume(bad), volume(ref), "c", labels=LESION, pred_path="p/c.nii.gz")
    message = info.value.message
    assert message.startswith("p/c.nii.gz: ") and "[4, 11]" in message
    assert "0 background, 1 CSF, 2 GM, 3 WM, 10 lesion" in message and "--labels" in message
    with pytest.raises(DataError, match=r"reference label map holds values \[10\].*0 background, 1 CSF, 2 GM, 3 WM"):
        evaluate_case(volume(label_map(73)), volume(ref), "c")  # IBSR's labels know no 10


def test_summary_records_the_label_set_and_mean_test_metrics_follow_it() -> None:
    ref = lesion_map(74)
    rows = evaluate_case(volume(lesion_perturbed(ref, 75)), volume(ref), "a", labels=LESION)
    summary = summarize(rows, labels=LESION)
    assert summary["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}
    assert list(summary["mean"]) == ["CSF", "GM", "WM", "lesion"]
    logged = mean_test_metrics(summary)
    assert logged["test_dice_lesion"] == summary["mean"]["lesion"]["dice"] and len(logged) == 4 * 5
    assert list(logged)[:5] == [f"test_{m}_CSF" for m in METRICS]
    # no recorded label set: the summary's own classes; an explicit label set: its classes only
    assert mean_test_metrics({"mean": summary["mean"]}) == logged
    two = LabelSet(("background", "lesion"), (0, 10))
    assert list(mean_test_metrics(summary, two)) == [f"test_{m}_lesion" for m in METRICS]
    assert "labels" not in summarize(rows)  # IBSR-era summaries are unchanged


def test_class_names_come_from_the_label_set() -> None:
    assert [class_name(v) for v in (1, 2, 3, 10)] == ["CSF", "GM", "WM", "label_10"]
    assert [class_name(v, LESION) for v in (1, 10, 4)] == ["CSF", "lesion", "label_4"]
    ref = lesion_map(76)
    scores = evaluate_labels(ref, ref, SPACING, classes=(10, 2), labels=LESION)
    assert list(scores) == ["lesion", "GM"] and scores["lesion"]["dice"] == 1.0


def write_lesion_pair(root: Path) -> tuple[Path, Path, Path]:
    """pred/x.nii.gz and ref/x_seg.nii.gz holding value 10, and an nnU-Net v2 dataset.json of LESION."""
    ref = lesion_map(77, (12, 10, 11))
    pred = lesion_perturbed(ref, 78)
    pred_path = write_volume(volume(pred), root / "pred" / "x.nii.gz")
    ref_path = write_volume(volume(ref), root / "ref" / "x_seg.nii.gz")
    dataset = root / "Dataset001_Lesion" / "dataset.json"
    dataset.parent.mkdir()
    dataset.write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": LESION.record(), "numTraining": 1,
                                   "file_ending": ".nii.gz"}))
    return pred_path, ref_path, dataset


def test_cli_labels_from_an_nnunet_dataset_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_path, ref_path, dataset = write_lesion_pair(tmp_path)
    expected = evaluate_case(read_volume(pred_path), read_volume(ref_path), "x", labels=LESION)
    argv = ["evaluate", "--pred", str(pred_path), "--ref", str(ref_path), "--labels", str(dataset), "--json"]
    assert main(argv) == 0
    result = strict_json(capsys.readouterr().out)
    assert list(result) == ["CSF", "GM", "WM", "lesion"]
    assert result["lesion"] == pytest.approx({m: expected[3][m] for m in METRICS})
    # the dataset's folder does as well; the folder pair writes the label set into its summary
    out, summary = tmp_path / "t.csv", tmp_path / "s.json"
    assert main(["evaluate", "--pred-dir", str(pred_path.parent), "--ref-dir", str(ref_path.parent), "--out", str(out),
                 "--summary", str(summary), "--labels", str(dataset.parent)]) == 0
    assert "lesion" in capsys.readouterr().out
    assert pd.read_csv(out)["class"].tolist() == ["CSF", "GM", "WM", "lesion"]
    assert strict_json(summary.read_text())["labels"] == LESION.record()


def test_cli_labels_decathlon_and_inline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    ref[5:7, 5:7, 5:7] = 10
    pred_path = write_volume(volume(ref), tmp_path / "p.nii.gz")
    decathlon = tmp_path / "dataset.json"
    decathlon.write_text(json.dumps({"labels": {"0": "background", "1": "edema", "10": "tumour"}}))
    for labels in (str(decathlon), "background=0, edema=1, tumour=10"):
        assert main(["evaluate", "--pred", str(pred_path), "--ref", str(pred_path), "--labels", labels, "--json"]) == 0
        result = strict_json(capsys.readouterr().out)
        assert list(result) == ["edema", "tumour"] and result["tumour"]["dice"] == 1.0


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ("nothere.json", "--labels 'nothere.json': no such file"),
        ("background=0,CSF=one", "'CSF=one' is not name=value"),
        ("CSF=1,GM=2", "no class with value 0"),
        ("background=0,a=1,b=1", "repeats the value 1"),
        ("{bad}", "not readable JSON"),
        ('{"name": "no labels"}', 'no "labels" mapping'),
        ('{"labels": {"background": 0, "tumour": [1, 2]}}', "region label"),
        ('{"labels": {"background": 0, "tumour": 1, "ignore": 2}}', "'ignore' label"),
        ('{"labels": {"0": "background", "x": "tumour"}}', "Decathlon labels need integer keys"),
    ],
)
def test_cli_bad_labels_are_one_error_line(
    labels: str, match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if labels.startswith("{"):
        (tmp_path / "dataset.json").write_text(labels)
        labels = str(tmp_path / "dataset.json")
    path = write_volume(volume(label_map(79)), tmp_path / "x.nii.gz")
    assert main(["evaluate", "--pred", str(path), "--ref", str(path), "--labels", labels]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --labels ") and match in err[0]


def test_cli_a_value_outside_the_labels_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_path, ref_path, _ = write_lesion_pair(tmp_path)
    argv = ["evaluate", "--pred", str(pred_path), "--ref", str(ref_path)]
    assert main(argv) == 2  # IBSR's labels (the default) know no 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {pred_path}: ") and "[10]" in err[0]
    assert "0 background, 1 CSF, 2 GM, 3 WM" in err[0]
    assert main([*argv, "--labels", "background=0,CSF=1,GM=2,lesion=10"]) == 2  # WM (3) is not in this set
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[3]" in err[0] and "0 background, 1 CSF, 2 GM, 10 lesion" in err[0]
