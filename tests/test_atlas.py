"""Tests for bench.baselines (atlas, registration): synthetic phantoms; MNI from nilearn; IBSR when present."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from bench.baselines.atlas import AtlasSegmenter, MniAtlas, MultiAtlas, TrainAtlas, build_atlas, normalise
from bench.baselines.registration import RegistrationSpec, affine_register, ras_to_sitk, register, warp
from bench.data.cohort import Case
from bench.errors import BenchError, ConfigError, DataError
from bench.io import Volume, read_volume

SPACING_MM = 2.0
SHAPE = (48, 48, 48)
INTENSITY = {1: 30.0, 2: 60.0, 3: 100.0}
FAST: dict[str, Any] = {
    "working_spacing_mm": 2.0,
    "affine_iterations": 100,
    "demons_shrink": [2, 1],
    "demons_iterations": [30, 20],
    "margin_mm": 6.0,
}
IBSR_ROOT = Path(
    os.environ.get("IBSR18_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data" / "ibsr18")
)


# ------------------------------------------------------------------------------------------ phantoms


def phantom_labels(
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
    shape: tuple[int, int, int] = SHAPE,
) -> np.ndarray:
    """Nested ellipsoids (CSF rim, GM, WM core) plus an off-centre CSF 'ventricle', indexed [x, y, z]."""
    axes = [(np.arange(n) - (n - 1) / 2) * SPACING_MM for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    x, y, z = x - shift_mm[0], y - shift_mm[1], z - shift_mm[2]
    radii = np.array([36.0, 30.0, 26.0]) * scale
    q = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    labels = np.zeros(shape, np.int16)
    labels[q < 1.0] = 1
    labels[q < 0.8] = 2
    labels[q < 0.5] = 3
    # asymmetric inner structures (two 'ventricles', one deep GM 'nucleus') pin down rotations
    for centre_mm, radius_mm, label in (
        ((7.0, 5.0, 0.0), 5.0, 1),
        ((-6.0, 8.0, 4.0), 4.0, 1),
        ((-4.0, -8.0, -3.0), 5.0, 2),
    ):
        inside = (
            sum((c - scale * m) ** 2 for c, m in zip((x, y, z), centre_mm, strict=True))
            < (scale * radius_mm) ** 2
        )
        labels[inside] = label
    return labels


def phantom_case(
    case_id: str, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0, seed: int = 0
) -> Case:
    labels = phantom_labels(shift_mm, scale)
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE, np.float32)
    for label, value in INTENSITY.items():
        image[labels == label] = value
    image[labels > 0] += rng.normal(0.0, 3.0, int((labels > 0).sum())).astype(np.float32)
    spacing = (SPACING_MM,) * 3
    return Case(
        id=case_id,
        split="train",
        image=Volume(image, spacing, origin_mm=(-47.0, -47.0, -47.0)),
        label=Volume(labels, spacing, origin_mm=(-47.0, -47.0, -47.0)),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


TRAIN_SHIFTS = [((0.0, 0.0, 0.0), 1.0), ((4.0, -3.0, 2.0), 0.92), ((-3.0, 4.0, -2.0), 1.08)]


@pytest.fixture(scope="module")
def train_cases() -> list[Case]:
    return [phantom_case(f"S{i}", shift, scale, seed=i) for i, (shift, scale) in enumerate(TRAIN_SHIFTS)]


@pytest.fixture(scope="module")
def test_case() -> Case:
    return phantom_case("T", (-5.0, 3.0, 4.0), 0.95, seed=9)


# --------------------------------------------------------------------------------------- registration


def test_registration_is_repeatable_for_a_seed() -> None:
    """Seed 0 must not mean SimpleITK's sitkWallClock (a new random metric sample every run)."""
    fixed = phantom_case("F").image.to_sitk()
    truth = sitk.Euler3DTransform()
    truth.SetRotation(*(math.radians(a) for a in (6.0, -4.0, 8.0)))
    moving = warp(fixed, fixed, truth)
    spec = RegistrationSpec(deformable="none", affine_iterations=40, seed=0)
    first, second = (affine_register(fixed, moving, spec, label="phantom") for _ in range(2))
    # threaded sums differ in low bits (seen 3e-9); a new random sample moves parameters by ~1e-3 to 1e-2
    np.testing.assert_allclose(first.GetParameters(), second.GetParameters(), rtol=0, atol=1e-5)


def test_affine_registration_recovers_known_rigid_motion() -> None:
    fixed_case = phantom_case("F")
    fixed = fixed_case.image.to_sitk()
    fixed_labels = sitk.Cast(fixed_case.label.to_sitk(), sitk.sitkUInt8)  # type: ignore[union-attr]
    truth = sitk.Euler3DTransform()
    truth.SetRotation(*(math.radians(a) for a in (6.0, -4.0, 8.0)))
    truth.SetTranslation((5.0, -4.0, 3.0))
    moving = warp(fixed, fixed, truth)  # moving(y) = fixed(truth(y)): the answer is truth⁻¹
    moving_labels = warp(fixed_labels, fixed, truth, interpolator=sitk.sitkNearestNeighbor)

    spec = RegistrationSpec(deformable="none", affine_iterations=150)
    found = affine_register(fixed, moving, spec, label="phantom")
    back = sitk.GetArrayFromImage(warp(moving_labels, fixed, found, interpolator=sitk.sitkNearestNeighbor))
    before = sitk.GetArrayFromImage(moving_labels)
    truth_array = sitk.GetArrayFromImage(fixed_labels)
    for label in (1, 2, 3):
        assert dice(back == label, truth_array == label) > 0.9
    assert dice(before == 1, truth_array == 1) < 0.6  # the motion was not trivial
    inverse = truth.GetInverse()
    points = [(x, y, z) for x in (-20.0, 0.0, 20.0) for y in (-15.0, 15.0) for z in (-10.0, 10.0)]
    errors_mm = [
        np.linalg.norm(np.subtract(found.TransformPoint(p), inverse.TransformPoint(p))) for p in points
    ]
    assert max(errors_mm) < 1.5


def test_register_with_demons_improves_on_affine_for_a_local_deformation() -> None:
    fixed_case = phantom_case("F")
    fixed = fixed_case.image.to_sitk()
    # a smooth non-affine deformation: the WM core is pushed sideways (a bulge the affine cannot undo)
    displacement = np.zeros((*SHAPE[::-1], 3))
    zz, yy, xx = np.meshgrid(*(np.arange(n) - n / 2 for n in SHAPE[::-1]), indexing="ij")
    displacement[..., 0] = 6.0 * np.exp(-(xx**2 + yy**2 + zz**2) / (2 * 7.0**2))
    field = sitk.GetImageFromArray(displacement, isVector=True)
    field.CopyInformation(fixed)
    bulge = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    moving = warp(fixed, fixed, bulge)
    labels = sitk.Cast(fixed_case.label.to_sitk(), sitk.sitkUInt8)  # type: ignore[union-attr]
    moving_labels = warp(labels, fixed, bulge, interpolator=sitk.sitkNearestNeighbor)
    truth = sitk.GetArrayFromImage(labels) == 3

    scores = {}
    for kind in ("none", "demons"):
        spec = RegistrationSpec(deformable=kind, **{**FAST, "demons_iterations": (40, 40)})
        found = register(fixed, moving, spec, label="phantom")
        back = sitk.GetArrayFromImage(
            warp(moving_labels, fixed, found, interpolator=sitk.sitkNearestNeighbor)
        )
        scores[kind] = dice(back == 3, truth)
    assert scores["demons"] > scores["none"] + 0.03
    assert scores["demons"] > 0.9


def test_ras_to_sitk_flips_the_first_two_axes_to_lps() -> None:
    affine = np.array([[2.0, 0, 0, -90.0], [0, 2.0, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]])
    image = ras_to_sitk(np.zeros((4, 5, 6), np.float32), affine)
    assert image.GetSize() == (4, 5, 6)
    assert image.GetSpacing() == (2.0, 2.0, 2.0)
    assert image.GetOrigin() == (90.0, 126.0, -72.0)
    assert image.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    # voxel (1, 2, 3) is at RAS (-88, -122, -66), i.e. LPS (88, 122, -66)
    assert image.TransformIndexToPhysicalPoint((1, 2, 3)) == (88.0, 122.0, -66.0)


def test_registration_failure_names_the_stage_and_pair() -> None:
    fixed = phantom_case("F").image.to_sitk()
    flat = sitk.Image(fixed.GetSize(), sitk.sitkFloat32)
    flat.CopyInformation(fixed)
    flat += 1.0  # no structure: SimpleITK's registration throws
    with pytest.raises(
        BenchError, match=r"similarity registration of S7 <- flat failed in SimpleITK: ITK ERROR"
    ):
        register(fixed, flat, RegistrationSpec(**FAST), label="S7 <- flat")
    broken = sitk.GetImageFromArray(np.full((48, 48, 48), np.nan, np.float32))  # would hang ITK
    with pytest.raises(BenchError, match=r"registration of S7 <- nan: the moving image holds NaN"):
        register(fixed, broken, RegistrationSpec(**FAST), label="S7 <- nan")
    tiny = sitk.Image([2, 2, 2], sitk.sitkFloat32) + 1.0
    with pytest.raises(BenchError, match=r"preparing the moving image of S7 <- tiny.*working_spacing_mm=2.0"):
        register(fixed, tiny, RegistrationSpec(**FAST), label="S7 <- tiny")


# ---------------------------------------------------------------------------------- train / multi atlases


def _check_prediction(probabilities: np.ndarray, case: Case) -> None:
    assert probabilities.shape == (4, *case.image.shape)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert probabilities.min() >= 0.0
    predicted = probabilities.argmax(axis=0)
    truth = case.label.array  # type: ignore[union-attr]
    for label in (1, 2, 3):
        assert dice(predicted == label, truth == label) > 0.8, f"class {label}"
    assert np.all(predicted[case.image.array == 0] == 0)


@pytest.mark.parametrize("kind", ["multi", "train"])
def test_train_and_multi_atlas_segment_a_new_phantom(
    kind: str, train_cases: list[Case], test_case: Case
) -> None:
    extra = {"atlas_spacing_mm": 2.0} if kind == "train" else {}
    segmenter = build_atlas(kind, **FAST, **extra)
    segmenter.fit_cases(train_cases)
    _check_prediction(segmenter.predict_volume(test_case.image), test_case)
    assert segmenter.describe()["atlas_ids"] == ["S0", "S1", "S2"]
    assert segmenter.name == f"atlas_{kind}"


def test_train_atlas_probabilities_average_the_training_labels(train_cases: list[Case]) -> None:
    atlas = TrainAtlas(atlas_spacing_mm=2.0, registration=RegistrationSpec(**FAST))
    atlas.fit_cases(train_cases[:1])  # one subject: the atlas is its own one-hot label
    assert atlas._probabilities is not None
    probabilities = sitk.GetArrayFromImage(atlas._probabilities)  # [z, y, x, 4]
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    values = np.unique(probabilities)  # same spacing and voxel centres as the subject: no blending
    assert np.all(np.minimum(np.abs(values), np.abs(values - 1.0)) < 1e-6)


# ----------------------------------------------------------------------------------------------- MNI


@pytest.fixture(scope="module")
def mni() -> MniAtlas:
    atlas = build_atlas(
        "mni",
        resolution_mm=2,
        **{**FAST, "working_spacing_mm": 3.0, "demons_shrink": [1], "demons_iterations": [40]},
    )
    assert isinstance(atlas, MniAtlas)
    return atlas


def test_mni_tissue_maps_load_from_nilearn(mni: MniAtlas) -> None:
    template, maps = mni.tissue_maps()
    assert template.GetSize() == (99, 117, 95)
    assert maps.GetNumberOfComponentsPerPixel() == 4
    probabilities = sitk.GetArrayFromImage(maps)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    brain = probabilities[..., 0] < 0.5
    assert 1.6e6 < brain.sum() * 8.0 < 2.1e6  # brain volume in mm³ (2 mm voxels)
    for channel in (1, 2, 3):
        assert probabilities[..., channel][brain].mean() > 0.1
    template_array = sitk.GetArrayFromImage(template)
    assert np.all(template_array[probabilities[..., 0] > 0.999] < 1e-3)  # skull-stripped
    assert template.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # RAS data in LPS
    # orientation: in ITK's LPS world the white matter's centre lies posterior (+y) and superior (+z) of the
    # anterior commissure (the MNI origin), on the midline
    white = sitk.Cast(sitk.VectorIndexSelectionCast(maps, 3) > 0.5, sitk.sitkUInt8)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(white)
    x_mm, y_mm, z_mm = shape.GetCentroid(1)
    assert abs(x_mm) < 2.0 and 10.0 < y_mm < 30.0 and 10.0 < z_mm < 30.0


def test_mni_segments_a_shifted_downsampled_template(mni: MniAtlas) -> None:
    template, maps = mni.tissue_maps()
    grid = sitk.Image([64, 76, 62], sitk.sitkFloat32)
    grid.SetSpacing((3.0, 3.0, 3.0))
    grid.SetOrigin((96.0, 132.0, -72.0))
    grid.SetDirection(template.GetDirection())
    shift = sitk.TranslationTransform(3, (4.0, -5.0, 3.0))
    image = Volume.from_sitk(warp(template, grid, shift))
    truth = np.argmax(channels_xyz(warp(maps, grid, shift)), axis=0)
    probabilities = mni.predict_volume(image)
    predicted = probabilities.argmax(axis=0)
    assert probabilities.shape == (4, 64, 76, 62)
    for label in (2, 3):
        assert dice(predicted == label, truth == label) > 0.8, f"class {label}"


def channels_xyz(vector: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(vector).transpose(3, 2, 1, 0)


@pytest.mark.ibsr
@pytest.mark.slow
def test_mni_on_a_real_ibsr_subject() -> None:
    folder = IBSR_ROOT / "Training_Set" / "IBSR_04"
    if not folder.is_dir():
        pytest.skip(f"IBSR18 not found at {IBSR_ROOT}")
    image = read_volume(folder / "IBSR_04.nii.gz")
    truth = read_volume(folder / "IBSR_04_seg.nii.gz").array
    predicted = build_atlas("mni").predict_volume(image).argmax(axis=0)
    for label in (2, 3):
        assert dice(predicted == label, truth == label) > 0.7, f"class {label}"


# ------------------------------------------------------------------------------------ save / load


def test_train_atlas_save_load_round_trip(tmp_path: Path, train_cases: list[Case]) -> None:
    atlas = build_atlas("train", reference="S1", atlas_spacing_mm=2.5, **FAST)
    atlas.fit_cases(train_cases[:2])
    atlas.save(tmp_path)
    loaded = AtlasSegmenter.load(tmp_path)
    assert isinstance(loaded, TrainAtlas) and isinstance(atlas, TrainAtlas)
    assert loaded.describe() == atlas.describe()
    assert loaded._template is not None and atlas._template is not None
    for mine, theirs in ((atlas._template, loaded._template), (atlas._probabilities, loaded._probabilities)):
        assert theirs is not None and mine is not None
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs))
        assert mine.GetOrigin() == pytest.approx(theirs.GetOrigin())
        assert mine.GetSpacing() == pytest.approx(theirs.GetSpacing())


def test_multi_and_mni_save_load_round_trip(tmp_path: Path, train_cases: list[Case]) -> None:
    multi = build_atlas("multi_atlas", deformable="none", restrict_to_foreground=False)
    multi.fit_cases(train_cases)
    multi.save(tmp_path / "multi")
    loaded = AtlasSegmenter.load(tmp_path / "multi")
    assert isinstance(loaded, MultiAtlas)
    assert loaded.params() == multi.params()
    assert [c.id for c in loaded._cases] == ["S0", "S1", "S2"]
    for mine, theirs in zip(train_cases, loaded._cases, strict=True):
        np.testing.assert_array_equal(mine.image.array, theirs.image.array)
        np.testing.assert_array_equal(mine.label.array, theirs.label.array)  # type: ignore[union-attr]

    mni = build_atlas("atlas_mni", resolution_mm=1.5, working_spacing_mm=3.0)
    mni.save(tmp_path / "mni")
    again = AtlasSegmenter.load(tmp_path / "mni")
    assert isinstance(again, MniAtlas)
    assert again.resolution_mm == 1.5 and again.registration.working_spacing_mm == 3.0


def test_load_refuses_a_folder_without_atlas_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"atlas\.json"):
        AtlasSegmenter.load(tmp_path)


# ------------------------------------------------------------------------------------- config / data


@pytest.mark.parametrize(
    ("kind", "params", "pattern"),
    [
        ("atlas_magic", {}, "unknown atlas kind 'atlas_magic'"),
        ("mni", {"reference": "S0"}, r"unknown atlas parameter\(s\) \['reference'\]"),
        ("multi", {"bogus": 1}, r"\['bogus'\]"),
        ("mni", {"resolution_mm": 0.5}, "resolution_mm=0.5"),
        ("train", {"atlas_spacing_mm": -1}, "atlas_spacing_mm=-1"),
        ("train", {"deformable": "syn"}, "deformable='syn'"),
        ("multi", {"sampling_fraction": 0.0}, "sampling_fraction=0.0"),
        ("multi", {"demons_shrink": [2, 1], "demons_iterations": [10]}, "demons_shrink/demons_iterations"),
    ],
)
def test_bad_configuration_is_named(kind: str, params: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_atlas(kind, **params)


def test_unknown_reference_is_a_config_error(train_cases: list[Case]) -> None:
    with pytest.raises(ConfigError, match="reference='S9'"):
        build_atlas("train", reference="S9").fit_cases(train_cases)


def test_bad_data_is_refused(train_cases: list[Case]) -> None:
    blank = Volume(np.zeros(SHAPE, np.float32), (SPACING_MM,) * 3)
    with pytest.raises(DataError, match="all zero"):
        build_atlas("mni").predict_volume(blank)
    unlabelled = Case(id="U1", split="train", image=train_cases[0].image)
    with pytest.raises(DataError, match="U1 has no label map"):
        build_atlas("multi").fit_cases([unlabelled])
    with pytest.raises(DataError, match="at least one labelled"):
        build_atlas("train").fit_cases([])
    with pytest.raises(BenchError, match="not fitted"):
        build_atlas("multi").predict_volume(train_cases[0].image)


def test_normalise_makes_empty_voxels_background() -> None:
    probabilities = np.array([[0.0, 0.2], [0.0, 0.2], [0.0, 0.4], [0.0, 0.0]], np.float32)[:, :, None, None]
    out = normalise(probabilities.copy())
    np.testing.assert_allclose(out[:, 0, 0, 0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[:, 1, 0, 0], [0.25, 0.25, 0.5, 0.0])
