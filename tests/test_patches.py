"""Tests for bench.patching: the training PatchSampler (grid / random_subset / random, oversampling,
padding, determinism, memory) and the inference GridSampler / GridAggregator / importance map."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from bench.contract import PatchSource
from bench.errors import ConfigError, DataError
from bench.patching.grid import GridAggregator, GridSampler, importance_map
from bench.patching.sampler import PatchSampler, PatchSubject, class_counts_on_grid
from bench.patching.windows import axis_starts, extract_patch


def make_subject(shape: tuple[int, int, int] = (8, 8, 8), *, channels: int | None = None, seed: int = 0,
                 mask: np.ndarray | None = None, label: np.ndarray | None = None) -> PatchSubject:
    rng = np.random.default_rng(seed)
    image_shape = shape if channels is None else (channels, *shape)
    image = rng.random(image_shape, dtype=np.float32) + 1.0
    return PatchSubject(image=image,
                        label=np.zeros(shape, dtype=np.uint8) if label is None else label,
                        mask=np.ones(shape, dtype=bool) if mask is None else mask,
                        id=f"s{seed}")


def rows_as_set(locations: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in locations}


# ------------------------------------------------------------------------------------------ candidates


def test_candidate_count_hand_computed() -> None:
    # 8³ volume, patch 4, step 2: starts 0,2,4 per axis (27 positions), centres 2,4,6.
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[:5] = True  # centres x=2 and x=4 are inside, x=6 is not -> 2 * 3 * 3
    sampler = PatchSampler([make_subject(mask=mask)], 4, step=2, shuffle=False)
    assert sampler.num_candidates == 18
    assert sampler.index.dtype == np.int32
    assert rows_as_set(sampler.index) == {(0, x, y, z) for x in (0, 2) for y in (0, 2, 4) for z in (0, 2, 4)}


def test_single_voxel_mask_gives_the_patch_centred_on_it() -> None:
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[4, 4, 4] = True
    sampler = PatchSampler([make_subject(mask=mask)], 4, step=2)
    assert sampler.index.tolist() == [[0, 2, 2, 2]]


def test_default_step_is_half_the_patch_and_anisotropic_patches() -> None:
    sampler = PatchSampler([make_subject((12, 10, 9))], (4, 6, 3), shuffle=False)
    assert sampler.step == (2, 3, 1)
    # starts: x 0..8 step 2 -> 5; y 0..4 step 3 -> 0,3 -> 2; z 0..6 step 1 -> 7
    assert sampler.num_candidates == 5 * 2 * 7


def test_grid_centres_lie_in_mask_and_every_such_grid_patch_is_listed() -> None:
    rng = np.random.default_rng(3)
    shape = (20, 18, 16)
    mask = rng.random(shape) < 0.3
    subjects = [make_subject(shape, mask=mask, seed=1), make_subject(shape, mask=~mask, seed=2)]
    sampler = PatchSampler(subjects, (6, 4, 8), step=(3, 2, 4), batch_size=5)
    expected = set()
    for s, subject in enumerate(subjects):
        for x, y, z in itertools.product(range(0, 15, 3), range(0, 15, 2), range(0, 9, 4)):
            if subject.mask[x + 3, y + 2, z + 4]:
                expected.add((s, x, y, z))
    locations = sampler.epoch_locations(0)
    assert len(locations) == len(expected) == sampler.epoch_size
    assert rows_as_set(locations) == expected


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_and_epoch_give_identical_batches_and_epochs_differ() -> None:
    subjects = [make_subject((16, 16, 16), seed=s) for s in range(2)]
    a = PatchSampler(subjects, 4, batch_size=7, seed=5)
    b = PatchSampler(subjects, 4, batch_size=7, seed=5)
    for batch_a, batch_b in zip(a.batches(1), b.batches(1), strict=True):
        np.testing.assert_array_equal(batch_a.image, batch_b.image)
        np.testing.assert_array_equal(batch_a.label, batch_b.label)
    epoch0, epoch1 = a.epoch_locations(0), a.epoch_locations(1)
    assert not np.array_equal(epoch0, epoch1)
    assert rows_as_set(epoch0) == rows_as_set(epoch1)  # same grid, another order
    other_seed = PatchSampler(subjects, 4, batch_size=7, seed=6)
    assert not np.array_equal(epoch0, other_seed.epoch_locations(0))


def test_no_shuffle_keeps_index_order_for_validation() -> None:
    sampler = PatchSampler([make_subject((12, 12, 12))], 4, shuffle=False)
    np.testing.assert_array_equal(sampler.epoch_locations(0), sampler.index)
    np.testing.assert_array_equal(sampler.epoch_locations(3), sampler.index)


def test_batches_contain_the_patches_their_locations_name() -> None:
    subject = make_subject((10, 12, 14), channels=2)
    subject.label[...] = np.arange(subject.label.size).reshape(subject.label.shape) % 4
    sampler = PatchSampler([subject], (4, 6, 2), batch_size=3, seed=1)
    locations = sampler.epoch_locations(0)
    batch = next(iter(sampler.batches(0)))
    for i, (_, x, y, z) in enumerate(locations[:3]):
        np.testing.assert_array_equal(batch.image[i], subject.image[:, x:x + 4, y:y + 6, z:z + 2])
        np.testing.assert_array_equal(batch.label[i], subject.label[x:x + 4, y:y + 6, z:z + 2])


# ------------------------------------------------------------------------------------- random modes


def test_random_subset_draws_k_distinct_grid_patches_per_epoch() -> None:
    subjects = [make_subject((16, 16, 16), seed=s) for s in range(2)]
    sampler = PatchSampler(subjects, 4, mode="random_subset", patches_per_epoch=20, batch_size=6)
    grid = rows_as_set(sampler.index)
    e0, e1 = sampler.epoch_locations(0), sampler.epoch_locations(1)
    assert len(e0) == 20 and len(rows_as_set(e0)) == 20
    assert rows_as_set(e0) <= grid and rows_as_set(e1) <= grid
    assert rows_as_set(e0) != rows_as_set(e1)
    assert len(sampler) == 4 and sum(1 for _ in sampler.batches(0)) == 4


def test_random_mode_centres_are_mask_voxels() -> None:
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:15, 6:14, 7:13] = True  # far enough from the border that no start is clipped for patch 4
    sampler = PatchSampler([make_subject((20, 20, 20), mask=mask)], 4, mode="random", patches_per_epoch=300)
    locations = sampler.epoch_locations(0)
    assert len(locations) == 300 and len(sampler.index) == 0
    centres = locations[:, 1:] + 2
    assert mask[centres[:, 0], centres[:, 1], centres[:, 2]].all()
    # uniform over the mask: every x-slice of the box is hit, none outside it
    assert set(centres[:, 0].tolist()) == set(range(5, 15))
    assert not np.array_equal(locations, sampler.epoch_locations(1))


def test_random_mode_clips_patches_inside_the_volume() -> None:
    sampler = PatchSampler([make_subject((10, 10, 10))], 6, mode="random", patches_per_epoch=200)
    starts = sampler.epoch_locations(2)[:, 1:]
    assert starts.min() == 0 and starts.max() == 4


# -------------------------------------------------------------------------------------- oversampling


def csf_subject(csf_patches: list[tuple[int, int, int]], voxels: int = 1) -> PatchSubject:
    """8³ volume tiled by eight 4³ grid patches; ``voxels`` CSF voxels in each listed patch."""
    label = np.full((8, 8, 8), 2, dtype=np.int16)
    for x, y, z in csf_patches:
        label[x + 1, y + 1, z + 1: z + 1 + voxels] = 1
    return make_subject(label=label)


CSF_PATCHES = [(0, 0, 0), (4, 0, 4), (4, 4, 4)]


def test_grid_oversampling_repeats_csf_patches_exactly() -> None:
    sampler = PatchSampler([csf_subject(CSF_PATCHES)], 4, step=4, batch_size=4, oversample=True)
    assert sampler.num_candidates == 8
    assert sampler.epoch_size == 3 * 3 + 5 == 14
    assert len(sampler) == 4
    locations = sampler.epoch_locations(0)
    counts = {row: sum(1 for r in locations.tolist() if tuple(r) == row) for row in rows_as_set(locations)}
    assert counts == {(0, *p): 3 if p in CSF_PATCHES else 1
                      for p in itertools.product((0, 4), repeat=3)}
    assert sum(len(b.image) for b in sampler.batches(0)) == 14
    plain = PatchSampler([csf_subject(CSF_PATCHES)], 4, step=4, batch_size=4)
    assert plain.epoch_size == 8


def test_oversampling_min_voxels_and_other_class() -> None:
    subject = csf_subject([(0, 0, 0)], voxels=1)
    subject.label[5, 5, 5:7] = 1  # two CSF voxels in the patch at (4, 4, 4)
    two = PatchSampler([subject], 4, step=4, oversample=True, oversample_min_voxels=2, oversample_factor=4)
    assert two.epoch_size == 4 + 7
    wm = PatchSampler([subject], 4, step=4, oversample=True, oversample_class=3)
    assert wm.epoch_size == 8  # no WM anywhere


def test_class_counts_on_grid_match_brute_force_with_padding() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(9, 3, 11))
    patch = (4, 5, 3)
    starts = [axis_starts(n, p, 2, end_aligned=False) for n, p in zip(label.shape, patch, strict=True)]
    assert starts[1].tolist() == [-1]
    counts = class_counts_on_grid(label, 1, starts, patch)
    for (i, x), (j, y), (k, z) in itertools.product(*(list(enumerate(s.tolist())) for s in starts)):
        window = label[max(x, 0):x + patch[0], max(y, 0):y + patch[1], max(z, 0):z + patch[2]]
        assert counts[i, j, k] == np.count_nonzero(window == 1)


def test_random_subset_oversampling_draws_from_the_expanded_list() -> None:
    sampler = PatchSampler([csf_subject(CSF_PATCHES)], 4, step=4, oversample=True, mode="random_subset",
                           patches_per_epoch=14)
    locations = sampler.epoch_locations(0)
    assert len(locations) == 14 and len(rows_as_set(locations)) == 8  # all of the expanded list
    with pytest.raises(ConfigError, match="patches_per_epoch=15"):
        PatchSampler([csf_subject(CSF_PATCHES)], 4, step=4, oversample=True, mode="random_subset",
                     patches_per_epoch=15)


def test_random_mode_oversampling_weights_the_draw() -> None:
    label = np.zeros((20, 4, 4), dtype=np.uint8)
    label[:2] = 1  # a patch of size 4 contains CSF iff its centre x <= 3: 4 of 20 centres
    subject = make_subject((20, 4, 4), label=label)

    def csf_fraction(**kwargs: object) -> float:
        sampler = PatchSampler([subject], 4, mode="random", patches_per_epoch=3000, seed=7, **kwargs)  # type: ignore[arg-type]
        return float(np.mean(sampler.epoch_locations(0)[:, 1] <= 1))

    assert abs(csf_fraction() - 4 / 20) < 0.03
    assert abs(csf_fraction(oversample=True) - 12 / 28) < 0.03  # weights 3·4 vs 1·16


# -------------------------------------------------------------------------------------------- padding


def test_small_volume_is_padded_lazily_with_minimum_and_label_zero() -> None:
    image = (np.arange(3 * 10 * 10, dtype=np.float32).reshape(3, 10, 10) + 5.0)
    label = np.ones((3, 10, 10), dtype=np.uint8)
    subject = PatchSubject(image, label, np.ones((3, 10, 10), dtype=bool))
    sampler = PatchSampler([subject], (6, 4, 4), step=(1, 6, 6), batch_size=100, shuffle=False)
    assert sampler.index[:, 1].tolist() == [-1] * 4  # -((6 - 3) // 2), centre x = 2
    batch = next(iter(sampler.batches(0)))
    first = batch.image[0, 0]
    assert (first[0] == 5.0).all() and (first[4:] == 5.0).all()
    np.testing.assert_array_equal(first[1:4], image[:, 0:4, 0:4])
    assert (batch.label[0, 0] == 0).all() and (batch.label[0, 4:] == 0).all()
    assert (batch.label[0, 1:4] == 1).all()


def test_padding_refused_when_disallowed() -> None:
    with pytest.raises(ConfigError, match=r"patch \(6, 4, 4\) larger than the preprocessed volume \(3, 10, 10\)"):
        PatchSampler([make_subject((3, 10, 10))], (6, 4, 4), allow_padding=False)


# ---------------------------------------------------------------------------------------- batch shape


@pytest.mark.parametrize("channels", [None, 2])
def test_batch_shapes_and_dtypes(channels: int | None) -> None:
    sampler = PatchSampler([make_subject((12, 12, 12), channels=channels)], (4, 6, 2), batch_size=4)
    assert isinstance(sampler, PatchSource)
    batches = list(sampler.batches(0))
    assert batches[0].image.shape == (4, channels or 1, 4, 6, 2) and batches[0].image.dtype == np.float32
    assert batches[0].label.shape == (4, 4, 6, 2) and batches[0].label.dtype == np.int64
    assert sum(len(b.image) for b in batches) == sampler.epoch_size


@pytest.mark.parametrize(("batch_size", "drop_last"), [(1, False), (7, False), (7, True), (18, False), (5, True)])
def test_len_matches_iteration(batch_size: int, drop_last: bool) -> None:
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[:5] = True  # 18 candidates
    sampler = PatchSampler([make_subject(mask=mask)], 4, step=2, batch_size=batch_size, drop_last=drop_last)
    batches = list(sampler.batches(0))
    assert len(batches) == len(sampler)
    sizes = [len(b.image) for b in batches]
    assert sum(sizes) == (18 - 18 % batch_size if drop_last else 18)
    assert all(size == batch_size for size in sizes[:-1])


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"patch_size": 0}, "patch_size=0"),
    ({"patch_size": (4, -1, 4)}, r"patch_size=\(4, -1, 4\)"),
    ({"patch_size": (4, 4)}, r"patch_size=\(4, 4\)"),
    ({"step": 0}, "step=0"),
    ({"step": (2, 0, 2)}, r"step=\(2, 0, 2\)"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"seed": -1}, "seed=-1"),
    ({"mode": "sliding"}, "mode='sliding'"),
    ({"mode": "random"}, "patches_per_epoch=None"),
    ({"oversample": True, "oversample_factor": 0}, "oversample_factor=0"),
    ({"drop_last": True, "batch_size": 1000}, "batch_size=1000"),
])
def test_bad_settings_raise_config_errors_naming_the_value(kwargs: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"patch_size": 4, **kwargs}
    patch_size = settings.pop("patch_size")
    with pytest.raises(ConfigError, match=message):
        PatchSampler([make_subject()], patch_size, **settings)  # type: ignore[arg-type]


def test_bad_subjects_raise_data_errors() -> None:
    with pytest.raises(DataError, match="brain mask is empty"):
        PatchSampler([make_subject(seed=9, mask=np.zeros((8, 8, 8), dtype=bool))], 4)
    with pytest.raises(DataError, match="label shape"):
        PatchSubject(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 7), np.uint8), np.ones((8, 8, 8), bool))
    with pytest.raises(DataError, match="mask dtype"):
        PatchSubject(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8), np.ones((8, 8, 8), np.uint8))
    with pytest.raises(DataError, match="no subjects"):
        PatchSampler([], 4)
    with pytest.raises(ConfigError, match="epoch=-1"):
        PatchSampler([make_subject()], 4).epoch_locations(-1)


# ----------------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize("oversample", [False, True])
def test_sampler_over_ten_ibsr_sized_volumes_holds_only_an_int32_index(oversample: bool) -> None:
    shape = (256, 128, 256)
    subjects = []
    for i in range(10):
        mask = np.zeros(shape, dtype=bool)
        mask[40:216, 20:108, 40:216] = True
        label = np.zeros(shape, dtype=np.uint8)
        label[100:110, 40:50, 60:200] = 1
        subjects.append(PatchSubject(np.zeros(shape, np.float32), label, mask, id=f"s{i}"))
    volume_bytes = subjects[0].image.nbytes
    tracemalloc.start()
    try:
        sampler = PatchSampler(subjects, 32, step=16, batch_size=8, oversample=oversample)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < volume_bytes / 8
    assert sampler.index.dtype == np.int32 and sampler.index.nbytes < 1_000_000
    assert sampler.num_candidates == 10 * 11 * 5 * 11  # centres 48..208 in x, 32..96 in y, 48..208 in z
    assert all(s.image is subjects[i].image for i, s in enumerate(sampler.subjects))
    if oversample:
        assert 0 < sampler.oversampled.sum() < sampler.num_candidates


# -------------------------------------------------------------------------------------- grid (inference)


def test_grid_sampler_starts_with_end_alignment_and_padding() -> None:
    grid = GridSampler((10, 11, 3), (4, 4, 8), step=3)
    xs, ys, zs = (sorted(set(grid.locations[:, a].tolist())) for a in range(3))
    assert xs == [0, 3, 6] and ys == [0, 3, 6, 7] and zs == [-2]
    assert len(grid) == 3 * 4 * 1 and grid.needs_padding
    assert GridSampler((64, 64, 64), 32, overlap=0.5).step == (16, 16, 16)
    assert GridSampler((64, 64, 64), (32, 20, 9), overlap=0.25).step == (24, 15, 6)
    with pytest.raises(ConfigError, match=r"overlap=1\.0"):
        GridSampler((8, 8, 8), 4, overlap=1.0)


def test_importance_map_matches_the_monai_formula() -> None:
    weights = importance_map((7, 5, 9), "gaussian", 0.125)
    axes = [np.exp(-((np.arange(p) - (p - 1) / 2) ** 2) / (2 * (0.125 * p) ** 2)) for p in (7, 5, 9)]
    expected = np.einsum("i,j,k->ijk", *axes)
    floor = max(expected.min(), 1e-3)
    np.testing.assert_allclose(weights, np.maximum(expected, floor), rtol=1e-6)
    assert weights.dtype == np.float32 and weights[3, 2, 4] == 1.0
    big = importance_map((32, 32, 32), "gaussian")
    assert big.min() == np.float32(1e-3) and big[0, 0, 0] == np.float32(1e-3)
    assert (importance_map((3, 4, 5), "mean") == 1).all()


def test_aggregator_refuses_uncovered_voxels_and_wrong_shapes() -> None:
    grid = GridSampler((8, 8, 8), 4, step=4)
    aggregator = GridAggregator(grid, 2)
    aggregator.add(np.ones((1, 2, 4, 4, 4), np.float32), grid.locations[:1])
    with pytest.raises(ValueError, match="448 voxels"):
        aggregator.result()
    with pytest.raises(ConfigError, match=r"shape \(1, 3, 4, 4, 4\)"):
        aggregator.add(np.ones((1, 3, 4, 4, 4), np.float32), grid.locations[:1])
    with pytest.raises(ConfigError, match="accumulate_dtype=int32"):
        GridAggregator(grid, 2, accumulate_dtype=np.int32)  # type: ignore[arg-type]


@pytest.mark.parametrize(("blending", "dtype"), [("mean", np.float64), ("gaussian", np.float32)])
def test_aggregator_sums_in_float64_for_mean_and_float32_for_gaussian(blending: str, dtype: type) -> None:
    grid = GridSampler((9, 7, 5), 4, step=2)
    aggregator = GridAggregator(grid, 3, blending)  # type: ignore[arg-type]
    assert aggregator.accumulate_dtype == np.dtype(dtype)
    rng = np.random.default_rng(3)
    volume = rng.random((3, 9, 7, 5)).astype(np.float32)
    for start in grid.locations:
        patch = np.zeros((1, 3, 4, 4, 4), np.float32)
        extract_patch(volume, start, grid.patch_size, 0.0, patch[0])
        aggregator.add(patch, start[None])
    result = aggregator.result()
    assert result.dtype == np.float32
    if blending == "mean":
        assert np.array_equal(result, volume)
    else:
        np.testing.assert_allclose(result, volume, atol=1e-6)


@pytest.mark.parametrize("patch", [(4, 4, 4), (3, 5, 2)])
def test_overlapping_patch_centres_are_the_windows_that_touch_the_brain(patch: tuple[int, int, int]) -> None:
    from bench.patching.sampler import patch_centre_region

    rng = np.random.default_rng(0)
    mask = np.zeros((12, 11, 10), bool)
    mask[5:7, 4:6, 3:8] = True
    mask[tuple(rng.integers(0, 10, size=(3, 2)))] = True
    assert patch_centre_region(mask, patch, "centre_in_brain") is mask
    region = patch_centre_region(mask, patch, "overlaps_brain")
    for centre in np.ndindex(mask.shape):  # brute force: the window the sampler cuts for this centre
        window = tuple(slice(max(c - p // 2, 0), max(c - p // 2 + p, 0)) for c, p in zip(centre, patch, strict=True))
        assert region[centre] == mask[window].any(), centre
    assert region[mask].all() and region.sum() > mask.sum()
    with pytest.raises(ConfigError, match=r"sampling\.region='edge'"):
        patch_centre_region(mask, patch, "edge")  # type: ignore[arg-type]
