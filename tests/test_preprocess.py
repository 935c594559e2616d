"""Tests for bench.preprocess (pipeline, steps) on tiny synthetic phantoms (and one real IBSR pair)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import bench.preprocess.pipeline as pp
from bench.data.cohort import Case
from bench.errors import ConfigError, DataError
from bench.io import Volume, read_volume, write_volume
from bench.preprocess.pipeline import (
    PRESETS,
    Clahe,
    HistogramMatching,
    Pipeline,
    PreparedCase,
    PreprocessCache,
    SpacingNormalisation,
    Standardisation,
    brain_mask,
    clahe_kernel_size,
    prepare,
    skimage_clip_limit,
)

REPO = Path(__file__).resolve().parents[1]
FLIP_X = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
TISSUE_MEANS = {1: 30.0, 2: 60.0, 3: 90.0}


# ------------------------------------------------------------------------------------------------ phantoms
def phantom_arrays(
    shape: tuple[int, int, int] = (40, 32, 36), spacing: tuple[float, float, float] = (1.2, 1.5, 0.9), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Nested ellipsoids (CSF shell, GM shell, WM core) in physical mm, intensities 30/60/90 + noise, bg 0."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    semi = [0.42 * e for e in extent]
    radius = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2)
    label = np.zeros(shape, dtype=np.uint8)
    label[radius < 1.0] = 1
    label[radius < 0.72] = 2
    label[radius < 0.45] = 3
    image = np.zeros(shape, dtype=np.float32)
    for k, mean in TISSUE_MEANS.items():
        image[label == k] = mean
    image += (label > 0) * rng.normal(0.0, 3.0, shape).astype(np.float32)
    image = np.where(label > 0, np.maximum(image, 1.0), 0.0).astype(np.float32)
    return image, label


def make_case(
    case_id: str = "S1", split: str = "train", image: np.ndarray | None = None, label: np.ndarray | None = None,
    spacing: tuple[float, float, float] = (1.2, 1.5, 0.9), origin: tuple[float, float, float] = (30.0, -5.0, 2.0),
    direction: tuple[float, ...] = FLIP_X, seed: int = 0,
) -> Case:
    if image is None:
        image, default_label = phantom_arrays(spacing=spacing, seed=seed)
        label = default_label if label is None else label
    geometry: dict[str, Any] = {"spacing_mm": spacing, "origin_mm": origin, "direction": direction}
    return Case(
        case_id, split, Volume(image, **geometry), None if label is None else Volume(label, **geometry)
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def in_mask_quantiles(case: PreparedCase, qs: tuple[float, ...] = (10, 25, 50, 75, 90)) -> np.ndarray:
    return np.percentile(case.image.array[case.mask], qs)


def world_centroid(volume: Volume, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    direction = np.asarray(volume.direction).reshape(3, 3)
    return np.asarray(volume.origin_mm) + direction @ (index * np.asarray(volume.spacing_mm))


# ------------------------------------------------------------------------------------------------ brain mask
def test_brain_mask_fills_cavities_and_drops_specks_and_background() -> None:
    image, label = phantom_arrays()
    cavity = np.zeros_like(label, dtype=bool)
    cavity[18:22, 14:18, 16:20] = True  # a zero-valued pocket fully inside the WM
    image[cavity] = 0.0
    image[1, 1, 1] = 50.0  # an isolated bright speck in the background
    mask = brain_mask(Volume(image, (1.2, 1.5, 0.9)))
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask[cavity].all()
    assert not mask[1, 1, 1]
    np.testing.assert_array_equal(mask, label > 0)


def test_brain_mask_keeps_large_second_component_and_handles_empty() -> None:
    image = np.zeros((30, 20, 20), dtype=np.float32)
    image[2:14, 2:18, 2:18] = 5.0
    image[17:27, 2:18, 2:18] = 7.0  # a second sizeable piece (think detached cerebellum)
    mask = brain_mask(Volume(image, (1.0, 1.0, 1.0)))
    np.testing.assert_array_equal(mask, image > 0)
    assert not brain_mask(Volume(np.zeros((5, 5, 5), np.float32), (1.0, 1.0, 1.0))).any()


def test_prepare_casts_and_checks_labels() -> None:
    prepared = prepare(make_case())
    assert prepared.image.array.dtype == np.float32
    assert prepared.label is not None and prepared.label.array.dtype == np.uint8
    assert prepared.mask.any() and prepared.native.id == "S1"
    image, label = phantom_arrays()
    label[0, 0, 0] = 7
    with pytest.raises(DataError, match=r"0\.\.7 .*class indices 0\.\.3"):
        prepare(make_case(image=image, label=label), num_classes=4)


# ------------------------------------------------------------------------------------------------ standardise
def test_standardisation_zero_mean_unit_std_inside_mask() -> None:
    prepared = prepare(make_case())
    raw_inside = prepared.image.array[prepared.mask].astype(np.float64)
    out = Standardisation().apply(prepared)
    inside = out.image.array[out.mask]
    assert out.image.array.dtype == np.float32
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1.0) < 1e-4
    background = out.image.array[~out.mask]
    np.testing.assert_allclose(background, -raw_inside.mean() / raw_inside.std(), rtol=1e-5)


def test_standardisation_refuses_constant_brain() -> None:
    image = np.zeros((10, 10, 10), np.float32)
    image[2:8, 2:8, 2:8] = 4.0
    with pytest.raises(DataError, match="constant intensity"):
        Standardisation().apply(prepare(make_case(image=image, label=None, spacing=(1.0, 1.0, 1.0))))


# ------------------------------------------------------------------------------------------------ histmatch
def distorted(case: Case, case_id: str, split: str) -> Case:
    """A gamma-distorted, rescaled copy of a case's image (background stays 0)."""
    image = case.image.array
    warped = (200.0 * (image / 100.0) ** 1.8 + 5.0) * (image > 0)
    return replace(case, id=case_id, split=split, image=case.image.with_array(warped.astype(np.float32)))


def test_histogram_matching_pulls_quantiles_to_reference() -> None:
    reference = prepare(make_case("R", seed=1))
    moving = prepare(distorted(make_case("M", seed=2), "M", "test"))
    step = HistogramMatching(match_points=7)
    step.fit([reference])
    matched = step.apply(moving)
    before = np.abs(in_mask_quantiles(moving) - in_mask_quantiles(reference)).max()
    after = np.abs(in_mask_quantiles(matched) - in_mask_quantiles(reference)).max()
    assert before > 20.0
    assert after < 5.0 and after < before / 5.0
    assert (matched.image.array[~matched.mask] == 0).all()


def test_histogram_matching_reference_is_a_training_case() -> None:
    test_first = prepare(make_case("A_test", split="test", seed=3))
    train_b, train_c = prepare(make_case("B", seed=4)), prepare(make_case("C", seed=5))
    step = HistogramMatching()
    step.fit([test_first, train_c, train_b])
    assert step.state()["reference_id"] == "B"
    named = HistogramMatching(reference="C")
    named.fit([test_first, train_b, train_c])
    assert named.state()["reference_id"] == "C"
    for bad in ("nope", "A_test"):
        with pytest.raises(ConfigError, match=r"available: B, C"):
            HistogramMatching(reference=bad).fit([test_first, train_b, train_c])


def test_histogram_matching_needs_fit() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        HistogramMatching().apply(prepare(make_case()))


# ------------------------------------------------------------------------------------------------ CLAHE
def test_clip_limit_mapping_matches_opencv_formula() -> None:
    assert skimage_clip_limit(2.0) == 2.0 / 256
    for tile_pixels in (1, 64, 127, 128, 129, 512, 1000, 4096):
        opencv_count = max(int(2.0 * tile_pixels / 256), 1)
        skimage_count = int(np.clip(skimage_clip_limit(2.0) * tile_pixels, 1, None))
        assert skimage_count == opencv_count
    assert clahe_kernel_size((256, 128), (8, 8)) == (32, 16)
    assert clahe_kernel_size((36, 30), (8, 8)) == (5, 4)


def test_clahe_clip_count_seen_by_skimage(monkeypatch: pytest.MonkeyPatch) -> None:
    import skimage.exposure._adapthist as adapthist

    seen: list[int] = []
    original = adapthist.clip_histogram

    def spy(hist: np.ndarray, clip_limit: int) -> np.ndarray:
        seen.append(int(clip_limit))
        return original(hist, clip_limit)

    monkeypatch.setattr(adapthist, "clip_histogram", spy)
    image = phantom_arrays(shape=(256, 128, 2), spacing=(1.0, 1.0, 1.0))[0]
    Clahe(axis=2, tile_grid=(8, 8), clip_limit=2.0).apply(prepare(make_case(image=image, label=None)))
    tile_pixels = 32 * 16  # IBSR-sized slice: ceil(256 / 8) * ceil(128 / 8); OpenCV clips at 4 counts
    assert seen and set(seen) == {max(int(2.0 * tile_pixels / 256), 1)}


def test_clahe_range_background_and_slicing_axis() -> None:
    prepared = prepare(make_case())
    out = Clahe(axis=2).apply(prepared)
    values = out.image.array
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    assert (values[~out.mask] == 0).all()
    assert values[out.mask].std() > 0.05
    other_axis = Clahe(axis=0).apply(prepared).image.array
    assert np.abs(other_axis - values).max() > 0.05


def test_clahe_works_slice_by_slice() -> None:
    prepared = prepare(make_case())
    image = prepared.image.array.copy()
    inside_values = np.where(prepared.mask, image, np.nan)
    extremes = {np.unravel_index(np.nanargmax(inside_values), image.shape)[2],
                np.unravel_index(np.nanargmin(inside_values), image.shape)[2]}
    k = next(i for i in range(image.shape[2] // 2, image.shape[2]) if i not in extremes)
    inside = prepared.mask[:, :, k]
    low = float(np.nanmin(inside_values))
    image[:, :, k][inside] = np.maximum(image[:, :, k][inside] * 0.8, low)  # global min/max unchanged
    changed = prepared.with_image(image)
    base = Clahe(axis=2).apply(prepared).image.array
    new = Clahe(axis=2).apply(changed).image.array
    others = [i for i in range(image.shape[2]) if i != k]
    np.testing.assert_array_equal(base[:, :, others], new[:, :, others])
    assert np.abs(base[:, :, k] - new[:, :, k]).max() > 0.01
    across = Clahe(axis=0).apply(changed).image.array != Clahe(axis=0).apply(prepared).image.array
    assert across.any(axis=(1, 2)).sum() > 1  # along another axis the change reaches many slices


def test_step_parameter_validation() -> None:
    with pytest.raises(ConfigError, match="axis=3"):
        Clahe(axis=3)
    with pytest.raises(ConfigError, match="tile_grid"):
        Clahe(tile_grid=(8,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="target_spacing_mm"):
        SpacingNormalisation(target_spacing_mm=(1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match="match_points"):
        HistogramMatching(match_points=0)


# ------------------------------------------------------------------------------------------------ spacing
def test_spacing_shape_labels_and_physical_alignment() -> None:
    case = prepare(make_case())
    out = SpacingNormalisation((1.0, 1.0, 1.0)).apply(case)
    expected = tuple(round(n * s) for n, s in zip(case.image.shape, case.image.spacing_mm, strict=True))
    assert out.image.shape == expected == (48, 48, 32)
    assert out.image.spacing_mm == (1.0, 1.0, 1.0) and out.image.direction == FLIP_X
    assert out.label is not None and set(np.unique(out.label.array)) <= {0, 1, 2, 3}
    assert out.mask.dtype == bool and out.mask.shape == expected
    direction = np.asarray(FLIP_X).reshape(3, 3)
    corner_before = np.asarray(case.image.origin_mm) - direction @ (np.asarray(case.image.spacing_mm) / 2)
    corner_after = np.asarray(out.image.origin_mm) - direction @ (np.full(3, 0.5))
    np.testing.assert_allclose(corner_after, corner_before, atol=1e-9)
    assert case.label is not None
    for k in (1, 2, 3):
        shift = world_centroid(out.image, out.label.array == k) - world_centroid(case.image, case.label.array == k)
        assert np.abs(shift).max() < 0.3, (k, shift)


def test_spacing_round_trip_recovers_labels() -> None:
    case = prepare(make_case())
    step = SpacingNormalisation((1.0, 1.0, 1.0))
    out = step.apply(case)
    assert out.label is not None and case.label is not None
    onehot = np.stack([out.label.array == k for k in range(4)]).astype(np.float32)
    back = step.invert_probabilities(onehot, case)
    assert back.shape == (4, *case.image.shape) and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(axis=0), 1.0, atol=1e-5)
    recovered = back.argmax(axis=0)
    for k in (1, 2, 3):
        assert dice(recovered == k, case.label.array == k) > 0.95, k


def test_fast_inverse_matches_simpleitk_linear_resampling() -> None:
    import SimpleITK as sitk

    from bench.preprocess.spacing import _resample

    case = prepare(make_case())
    step = SpacingNormalisation((1.0, 1.0, 1.0))
    grid = step.output_grid(case.image)
    maps = np.random.default_rng(1).random((2, *grid.shape), dtype=np.float32)
    fast = step.invert_probabilities(maps / maps.sum(axis=0, keepdims=True), case)
    reference = np.stack([_resample(m, grid, case.image, sitk.sitkLinear) for m in maps / maps.sum(axis=0)])
    np.testing.assert_allclose(fast, reference / reference.sum(axis=0), atol=1e-5)


def test_spacing_identity_when_target_is_native() -> None:
    case = prepare(make_case(spacing=(1.0, 1.0, 1.0)))
    step = SpacingNormalisation((1.0, 1.0, 1.0))
    out = step.apply(case)
    np.testing.assert_array_equal(out.image.array, case.image.array)
    assert out.image.origin_mm == case.image.origin_mm and out.image.shape == case.image.shape
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=case.image.shape).transpose(3, 0, 1, 2)
    np.testing.assert_array_equal(step.invert_probabilities(probs.astype(np.float32), case), probs.astype(np.float32))


# ------------------------------------------------------------------------------------------------ pipeline
def cohort_cases() -> list[Case]:
    return [
        distorted(make_case("T0", seed=10), "T0", "test"),
        make_case("B", split="train", seed=11),
        distorted(make_case("A", seed=12), "A", "train"),
        make_case("V", split="val", seed=13),
    ]


def test_pipeline_fits_on_training_cases_only() -> None:
    pipeline = Pipeline.preset("histmatch")
    pipeline.fit(cohort_cases())
    assert pipeline.state()[0]["reference_id"] == "A"
    with pytest.raises(ConfigError, match="no training case"):
        Pipeline.preset("histmatch").fit([c for c in cohort_cases() if c.split != "train"])


def test_pipeline_apply_and_invert_through_geometry() -> None:
    cases = cohort_cases()
    pipeline = Pipeline.preset("spacing")
    pipeline.fit(cases)
    prepared = pipeline.apply(cases[0])
    inside = prepared.image.array[prepared.mask]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
    assert prepared.image.spacing_mm == (1.0, 1.0, 1.0)
    probs = np.full((4, *prepared.image.shape), 0.25, dtype=np.float32)
    back = pipeline.invert_probabilities(probs, prepared)
    assert back.shape == (4, *cases[0].image.shape)
    np.testing.assert_allclose(back.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        pipeline.invert_probabilities(probs[:, :-1], prepared)


def test_from_spec_errors_name_the_bad_setting() -> None:
    with pytest.raises(ConfigError, match="unknown step 'blur'"):
        Pipeline.from_spec([{"name": "standardise"}, {"name": "blur"}])
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) match_pts.*allowed: reference, levels"):
        Pipeline.from_spec([{"name": "histmatch", "match_pts": 7}])
    with pytest.raises(ConfigError, match="must be a mapping with a 'name'"):
        Pipeline.from_spec([{"match_points": 7}])
    with pytest.raises(ConfigError, match="unknown preprocess preset 'fancy'"):
        Pipeline.preset("fancy")


def test_params_are_json_and_rebuild_the_pipeline() -> None:
    for name in PRESETS:
        pipeline = Pipeline.preset(name)
        text = json.dumps(pipeline.params())
        rebuilt = Pipeline.from_spec(json.loads(text))
        assert rebuilt.params() == pipeline.params()
    pipeline = Pipeline.preset("histmatch")
    pipeline.fit(cohort_cases())
    json.dumps(pipeline.state())


def test_presets_match_the_config_files() -> None:
    for name, steps in PRESETS.items():
        config = yaml.safe_load((REPO / "conf" / "preprocess" / f"{name}.yaml").read_text())
        assert config["name"] == name
        assert Pipeline.from_spec(config).params() == Pipeline.from_spec(list(steps), name=name).params()


# ------------------------------------------------------------------------------------------------ cache
class CountingPipeline(Pipeline):
    """Counts how often the cache really computes (``apply``) a case."""

    calls = 0

    def apply(self, case: PreparedCase | Case) -> PreparedCase:
        self.calls += 1
        return super().apply(case)


def counting(spec: list[dict[str, Any]], train: list[Case]) -> CountingPipeline:
    pipeline = CountingPipeline(Pipeline.from_spec(spec).steps)
    pipeline.fit(train)  # fitting runs the plain prefix pipelines, so nothing is counted yet
    assert pipeline.calls == 0
    return pipeline


def file_case(tmp_path: Path, case_id: str = "S1", seed: int = 0) -> Case:
    case = make_case(case_id, seed=seed)
    assert case.label is not None
    image_path = write_volume(case.image, tmp_path / "data" / f"{case_id}.nii.gz")
    label_path = write_volume(case.label, tmp_path / "data" / f"{case_id}_seg.nii.gz")
    return Case(case_id, "train", read_volume(image_path), read_volume(label_path), image_path, label_path)


def test_cache_hit_miss_and_invalidation(tmp_path: Path) -> None:
    case = file_case(tmp_path)
    spec: list[dict[str, Any]] = [{"name": "histmatch", "match_points": 7}, {"name": "standardise"}]
    pipeline = counting(spec, [case])
    cache = PreprocessCache(tmp_path / "cache")
    first = cache.get_or_compute(pipeline, case)
    second = cache.get_or_compute(pipeline, case)
    assert pipeline.calls == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.image.array, second.image.array)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert second.label is not None and first.label is not None
    np.testing.assert_array_equal(first.label.array, second.label.array)
    assert second.image.origin_mm == first.image.origin_mm and second.native is case

    other_spec: list[dict[str, Any]] = [{"name": "histmatch", "match_points": 5}, {"name": "standardise"}]
    other = counting(other_spec, [case])
    cache.get_or_compute(other, case)
    assert other.calls == 1 and pipeline.calls == 1 and cache.misses == 2

    assert case.image_path is not None
    old = os.stat(case.image_path)
    brighter = case.image.with_array(case.image.array * np.float32(1.5))
    write_volume(brighter, case.image_path)
    os.utime(case.image_path, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # coarse-clock filesystems
    changed = replace(case, image=read_volume(case.image_path))
    cache.get_or_compute(pipeline, changed)
    assert cache.misses == 3
    cache.get_or_compute(pipeline, changed)
    assert cache.hits == 2 and pipeline.calls == 2


def test_cache_keys_in_memory_cases_by_array_content(tmp_path: Path) -> None:
    case = make_case()
    pipeline = counting([{"name": "standardise"}], [case])
    cache = PreprocessCache(tmp_path)
    cache.get_or_compute(pipeline, case)
    edited = case.image.array.copy()
    edited[20, 16, 18] += 1.0
    cache.get_or_compute(pipeline, replace(case, image=case.image.with_array(edited)))
    cache.get_or_compute(pipeline, case)
    assert (cache.hits, cache.misses) == (1, 2)


def test_cache_key_includes_fitted_reference(tmp_path: Path) -> None:
    a, b = make_case("A", seed=1), make_case("B", seed=2)
    spec = [{"name": "histmatch"}]
    fitted_a = counting(spec, [a])
    fitted_b = counting(spec, [b])
    cache = PreprocessCache(tmp_path)
    assert cache.key(fitted_a, a) != cache.key(fitted_b, a)
    with pytest.raises(RuntimeError, match="not fitted"):
        cache.key(Pipeline.from_spec(spec), a)


def test_truncated_cache_entry_is_recomputed(tmp_path: Path) -> None:
    case = make_case()
    pipeline = counting([{"name": "standardise"}], [case])
    cache = PreprocessCache(tmp_path)
    expected = cache.get_or_compute(pipeline, case).image.array
    entry = cache.path(pipeline, case)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="unreadable preprocessing cache entry"):
        again = cache.get_or_compute(pipeline, case)
    np.testing.assert_array_equal(again.image.array, expected)
    assert pipeline.calls == 2
    cache.get_or_compute(pipeline, case)
    assert pipeline.calls == 2 and cache.hits == 1


@pytest.mark.parametrize("compress", [True, False])
def test_cache_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress: bool) -> None:
    case = make_case()
    pipeline = counting([{"name": "standardise"}], [case])
    cache = PreprocessCache(tmp_path, compress=compress)
    cache.get_or_compute(pipeline, case)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(pipeline, case).name]

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    other = replace(case, id="S2")
    assert cache.get_or_compute(pipeline, case).image.shape == case.image.shape and cache.hits == 1
    monkeypatch.setattr(pp.np, "savez_compressed" if compress else "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute(pipeline, other)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(pipeline, case).name]


def test_fit_with_cache_caches_the_prefix(tmp_path: Path) -> None:
    train = [make_case("A", seed=1), make_case("B", seed=2)]
    cache = PreprocessCache(tmp_path)
    Pipeline.preset("spacing").fit(train, cache=cache)
    assert cache.misses == 2
    pipeline = Pipeline.preset("spacing")
    pipeline.fit(train, cache=cache)
    assert cache.hits == 2 and pipeline.state()[1]["reference_id"] == "A"


# ------------------------------------------------------------------------------------------------ real data
IBSR_ROOT = Path(os.environ.get("IBSR18_ROOT", REPO.parent / "shared" / "data" / "ibsr18"))


@pytest.mark.ibsr
def test_histmatch_standardise_on_real_ibsr() -> None:
    def load(subject: str, split: str) -> Case:
        folder = IBSR_ROOT / "Training_Set" / subject
        image_path, label_path = folder / f"{subject}.nii.gz", folder / f"{subject}_seg.nii.gz"
        if not image_path.exists():
            pytest.skip(f"IBSR18 data not found under {IBSR_ROOT}")
        return Case(subject, split, read_volume(image_path), read_volume(label_path), image_path, label_path)

    # IBSR_16 (0.84 mm scanner group) differs most from IBSR_01 after plain standardisation.
    reference, moving = load("IBSR_01", "train"), load("IBSR_16", "test")
    pipeline = Pipeline.preset("histmatch")
    pipeline.fit([moving, reference])
    assert pipeline.state()[0]["reference_id"] == "IBSR_01"
    start = time.perf_counter()
    out = pipeline.apply(moving)
    seconds = time.perf_counter() - start
    ref_out = pipeline.apply(reference)
    inside = out.image.array[out.mask]
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1.0) < 1e-3
    assert out.mask.sum() > 500_000
    # After matching, the moving subject's standardised quantiles sit close to the reference's.
    gap = np.abs(in_mask_quantiles(out) - in_mask_quantiles(ref_out)).max()
    raw_gap = np.abs(in_mask_quantiles(Pipeline.preset("raw").apply(moving)) - in_mask_quantiles(ref_out)).max()
    assert gap < 0.15 and gap < raw_gap / 2
    print(f"\nhistmatch+standardise on {moving.id} {moving.image.shape}: {seconds:.2f} s per volume; "
          f"max in-mask quantile gap to the reference {gap:.3f} (standardise only: {raw_gap:.3f})")
    assert seconds < 30.0
