"""Tests for bench.evaluation.metrics: medpy 0.5.2 is the oracle, plus hand-computed answers on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from medpy.metric import binary as mb
from scipy import ndimage

from bench.evaluation import metrics
from bench.evaluation.metrics import evaluate_labels, surface_distances

SPACINGS = [(1.0, 1.0, 1.0), (0.9375, 1.5, 0.9375), (2.0, 0.5, 1.2)]
SHAPE = (40, 30, 35)
medpy_directed = getattr(mb, "__surface_distances")  # medpy's module-private helper


def smooth_field(shape: tuple[int, ...], seed: int, sigma: float = 3.0) -> npt.NDArray[np.float64]:
    """Gaussian-smoothed white noise, scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return field / field.std()


def blob_pair(seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A reference blob and a prediction: the same field, perturbed, thresholded (overlapping, imperfect)."""
    field = smooth_field(shape, seed)
    noise = smooth_field(shape, seed + 1000, sigma=1.5)
    ref = field > 0.3
    pred = (field + 0.4 * noise) > 0.3
    return pred, ref


def label_map(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A 0..3 label map from a smooth random field cut at three thresholds."""
    field = smooth_field(shape, seed)
    return np.digitize(field, np.quantile(field, [0.4, 0.6, 0.8])).astype(np.uint8)


def medpy_all(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    return {
        "dice": mb.dc(pred, ref),
        "avd": abs(mb.ravd(pred, ref)) * 100,
        "hd": mb.hd(pred, ref, voxelspacing=spacing),
        "hd95": mb.hd95(pred, ref, voxelspacing=spacing),
        "assd": mb.assd(pred, ref, voxelspacing=spacing),
    }


def assert_close(actual: dict[str, float], expected: dict[str, float], tol: float = 1e-6) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol, rel=0), key


# ---------------------------------------------------------------------------------------------- medpy oracle


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_binary_metrics_equal_medpy_on_random_blobs(seed: int, spacing: tuple[float, float, float]) -> None:
    pred, ref = blob_pair(seed)
    assert 0.5 < mb.dc(pred, ref) < 0.99  # a realistic, imperfect overlap
    assert_close(metrics.binary_metrics(pred, ref, spacing), medpy_all(pred, ref, spacing))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_directed_distances_equal_medpy(spacing: tuple[float, float, float]) -> None:
    pred, ref = blob_pair(3)
    sd = surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(
        np.sort(sd.pred_to_ref_mm), np.sort(medpy_directed(pred, ref, spacing)), atol=1e-9
    )
    np.testing.assert_allclose(
        np.sort(sd.ref_to_pred_mm), np.sort(medpy_directed(ref, pred, spacing)), atol=1e-9
    )


def test_far_outliers_use_exact_fallback() -> None:
    """Isolated voxels far beyond the offset shells (k-d tree path) still match medpy."""
    pred, ref = blob_pair(4)
    pred[0, 0, 0] = pred[39, 29, 34] = True  # far corners, > 10 voxels from any reference surface
    ref[39, 0, 34] = True
    spacing = (0.9375, 1.5, 0.9375)
    assert_close(metrics.binary_metrics(pred, ref, spacing), medpy_all(pred, ref, spacing))


def test_masks_touching_the_volume_border_match_medpy_and_padding() -> None:
    """Cropping to the bounding box changes nothing, also where masks touch the volume border."""
    pred, ref = blob_pair(5)
    pred[:, :, 0] = True  # whole faces of the volume
    ref[0, :, :] |= smooth_field(SHAPE[1:], 9) > 0
    spacing = (2.0, 0.5, 1.2)
    assert pred[0].any() and ref[:, 0].any() and ref[-1].any()
    expected = medpy_all(pred, ref, spacing)
    assert_close(metrics.binary_metrics(pred, ref, spacing), expected)
    # medpy erodes with border_value=0, so embedding both masks in a larger zero volume changes nothing.
    big_pred, big_ref = np.pad(pred, 4), np.pad(ref, 4)
    assert_close(metrics.binary_metrics(big_pred, big_ref, spacing), expected)


def test_cropped_distances_equal_uncropped_distance_transform() -> None:
    pred, ref = blob_pair(6)
    pred[-1, :, :] = True
    spacing = (1.0, 0.7, 1.3)
    structure = ndimage.generate_binary_structure(3, 1)
    borders = [m ^ ndimage.binary_erosion(m, structure=structure, border_value=0) for m in (pred, ref)]
    expected = ndimage.distance_transform_edt(~borders[1], sampling=spacing)[borders[0]]
    actual = surface_distances(pred, ref, spacing).pred_to_ref_mm
    np.testing.assert_allclose(np.sort(actual), np.sort(expected), atol=1e-9)


@pytest.mark.parametrize("spacing", SPACINGS[1:])
def test_hd95_modes_equal_medpy_definitions(spacing: tuple[float, float, float]) -> None:
    pred, ref = blob_pair(7)
    pred[2:5, 2:5, 2:5] = True  # an outlier so the two directions differ
    d1, d2 = medpy_directed(pred, ref, spacing), medpy_directed(ref, pred, spacing)
    sd = surface_distances(pred, ref, spacing)
    assert sd.hd95("pooled") == pytest.approx(mb.hd95(pred, ref, voxelspacing=spacing), abs=1e-6)
    max_directed = max(np.percentile(d1, 95), np.percentile(d2, 95))
    assert sd.hd95("max_directed") == pytest.approx(max_directed, abs=1e-6)


# ---------------------------------------------------------------------------------------------- hand-computed


def test_two_single_voxels_three_apart_with_spacing_two() -> None:
    pred = np.zeros((5, 7, 5), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2, 1, 2] = True
    ref[2, 4, 2] = True
    result = metrics.binary_metrics(pred, ref, (1.0, 2.0, 1.0))
    assert result == {"dice": 0.0, "avd": 0.0, "hd": 6.0, "hd95": 6.0, "assd": 6.0}


def test_line_against_its_end_voxel() -> None:
    """A 21-voxel line along axis 0 vs its first voxel: every line voxel is surface (distances 0..20)."""
    pred = np.zeros((25, 3, 3), dtype=bool)
    ref = np.zeros_like(pred)
    pred[2:23, 1, 1] = True
    ref[2, 1, 1] = True
    sd = surface_distances(pred, ref, (1.0, 1.0, 1.0))
    assert sorted(sd.pred_to_ref_mm.tolist()) == [float(i) for i in range(21)]
    assert sd.ref_to_pred_mm.tolist() == [0.0]
    assert sd.hd() == 20.0
    # pooled: 22 values 0,0,1,...,20 -> position 0.95 * 21 = 19.95 between 18 and 19
    assert sd.hd95("pooled") == pytest.approx(18.95, abs=1e-12)
    # max_directed: 0..20 -> position 0.95 * 20 = 19 -> 19; the other direction is 0
    assert sd.hd95("max_directed") == pytest.approx(19.0, abs=1e-12)
    assert sd.assd() == pytest.approx(210 / 22, abs=1e-12)  # medpy 0.5.2: pooled mean, not (10 + 0) / 2
    assert metrics.dice(pred, ref) == pytest.approx(2 / 22)
    assert metrics.avd(pred, ref) == pytest.approx(2000.0)


def test_cube_against_its_centre_with_anisotropic_spacing() -> None:
    pred = np.zeros((7, 7, 7), dtype=bool)
    pred[2:5, 2:5, 2:5] = True  # 3x3x3 cube: 26 surface voxels around an interior centre
    ref = np.zeros_like(pred)
    ref[3, 3, 3] = True
    sx, sy, sz = 1.0, 2.0, 3.0
    sd = surface_distances(pred, ref, (sx, sy, sz))
    assert sd.pred_to_ref_mm.size == 26
    assert sd.ref_to_pred_mm.tolist() == [1.0]  # nearest cube surface voxel: one step along x
    assert sd.hd() == pytest.approx(math.sqrt(sx**2 + sy**2 + sz**2))
    assert sd.pred_to_ref_mm.min() == 1.0


def test_identical_masks_score_perfectly() -> None:
    _, ref = blob_pair(8)
    assert metrics.binary_metrics(ref, ref, (0.5, 1.0, 2.0)) == {
        "dice": 1.0,
        "avd": 0.0,
        "hd": 0.0,
        "hd95": 0.0,
        "assd": 0.0,
    }


# ---------------------------------------------------------------------------------------------- empty masks


def test_both_empty() -> None:
    empty = np.zeros((4, 4, 4), dtype=bool)
    assert metrics.binary_metrics(empty, empty, (1.0, 1.0, 1.0)) == {
        "dice": 1.0,
        "avd": 0.0,
        "hd": 0.0,
        "hd95": 0.0,
        "assd": 0.0,
    }


def test_reference_empty_prediction_not() -> None:
    pred = np.zeros((4, 4, 4), dtype=bool)
    pred[1, 1, 1] = True
    result = metrics.binary_metrics(pred, np.zeros_like(pred), (1.0, 1.0, 1.0))
    assert result == {"dice": 0.0, "avd": math.inf, "hd": math.inf, "hd95": math.inf, "assd": math.inf}


def test_prediction_empty_reference_not() -> None:
    ref = np.zeros((4, 4, 4), dtype=bool)
    ref[1:3, 1, 1] = True
    result = metrics.binary_metrics(np.zeros_like(ref), ref, (1.0, 1.0, 1.0))
    assert result == {"dice": 0.0, "avd": 100.0, "hd": math.inf, "hd95": math.inf, "assd": math.inf}
    assert surface_distances(np.zeros_like(ref), ref, (1, 1, 1)).hd95("max_directed") == math.inf


# ---------------------------------------------------------------------------------------------- label maps


@pytest.mark.parametrize("hd95_mode", ["pooled", "max_directed"])
def test_evaluate_labels_fast_equals_medpy_backend(hd95_mode: metrics.Hd95Mode) -> None:
    ref = label_map(10)
    pred = label_map(10)
    noise = np.random.default_rng(11).random(SHAPE)
    pred[noise < 0.03] = 1  # scattered CSF errors, far from the CSF surfaces too
    pred[ndimage.binary_dilation(ref == 3) & (noise > 0.9)] = 3
    spacing = (0.9375, 1.5, 0.9375)
    fast = evaluate_labels(pred, ref, spacing, hd95_mode=hd95_mode)
    slow = evaluate_labels(pred, ref, spacing, hd95_mode=hd95_mode, backend="medpy")
    assert list(fast) == ["CSF", "GM", "WM"]
    for name in fast:
        assert_close(fast[name], slow[name])
    if hd95_mode == "pooled":
        for label, name in [(1, "CSF"), (2, "GM"), (3, "WM")]:
            assert_close(fast[name], medpy_all(pred == label, ref == label, spacing))


def test_evaluate_labels_missing_classes_follow_empty_rule_in_both_backends() -> None:
    ref = label_map(12)
    pred = ref.copy()
    pred[pred == 1] = 0  # CSF predicted nowhere
    ref[ref == 3] = 2  # no WM in the reference, but WM predicted
    spacing = (1.0, 1.0, 1.0)
    for backend in ("fast", "medpy"):
        result = evaluate_labels(pred, ref, spacing, classes=(1, 2, 3, 4), backend=backend)  # type: ignore[arg-type]
        assert result["CSF"] == {
            "dice": 0.0,
            "avd": 100.0,
            "hd": math.inf,
            "hd95": math.inf,
            "assd": math.inf,
        }
        assert (
            result["WM"]["dice"] == 0.0 and result["WM"]["avd"] == math.inf and result["WM"]["hd"] == math.inf
        )
        assert result["label_4"] == {"dice": 1.0, "avd": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0}


def test_evaluate_labels_ignores_other_labels_and_keeps_class_order() -> None:
    ref = label_map(13).astype(np.int16)
    pred = ref.copy()
    pred[0, 0, 0] = -5  # neither negative nor unscored labels disturb the scored classes
    pred[1, 1, 1] = 200
    result = evaluate_labels(pred, ref, (1.0, 1.0, 1.0), classes=(3, 1))
    assert list(result) == ["WM", "CSF"]
    for label, name in [(3, "WM"), (1, "CSF")]:
        assert_close(result[name], medpy_all(pred == label, ref == label, (1.0, 1.0, 1.0)))


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        evaluate_labels(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match=r"\(3, 3, 3\).*\(3, 3\)"):
        metrics.dice(np.zeros((3, 3, 3)), np.zeros((3, 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing_mm": (1.0, 1.0)}, "2 values"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "positive"),
        ({"classes": (0, 1)}, "positive"),
        ({"hd95_mode": "median"}, "hd95_mode='median'"),
        ({"backend": "gpu"}, "backend='gpu'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, object], match: str) -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    call: dict[str, object] = {"spacing_mm": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_labels(arr, arr, **call)  # type: ignore[arg-type]


def test_float_label_maps_are_refused() -> None:
    with pytest.raises(ValueError, match="float64"):
        evaluate_labels(np.zeros((3, 3, 3)), np.zeros((3, 3, 3), np.uint8), (1, 1, 1))  # type: ignore[arg-type]
