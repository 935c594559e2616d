"""Data augmentation of training batches (``bench.patching.augment``) and where the sampler applies it.

Oracles: an image that encodes each voxel's position, so that a flipped patch can be checked voxel by voxel
against its label and against ``np.flip`` of the unaugmented patch; hand formulas for the intensity jitter.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_records import spec_of

from bench.contract import PatchBatch
from bench.errors import ConfigError
from bench.patching.augment import AugmentSpec, augment_batch
from bench.patching.sampler import PatchSampler, PatchSubject
from bench.segmenters import patch_sources
from bench.spec import effective_settings


def position_subject(shape: tuple[int, int, int] = (20, 18, 16)) -> PatchSubject:
    """image = the voxel's linear index (exact in float32), label = index * 7 mod 4: any voxel's label follows
    from its intensity wherever it is moved."""
    index = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    return PatchSubject(image=index.astype(np.float32), label=index * 7 % 4, mask=np.ones(shape, bool))


def sampler(augment: AugmentSpec | None, seed: int = 0) -> PatchSampler:
    return PatchSampler([position_subject()], 8, step=4, batch_size=4, seed=seed, mode="random",
                        patches_per_epoch=24, augment=augment)


def all_batches(source: PatchSampler, epoch: int = 0) -> list[PatchBatch]:
    return list(source.batches(epoch))


def test_flips_move_image_and_label_together_and_only_flip() -> None:
    plain = all_batches(sampler(None))
    flipped = all_batches(sampler(AugmentSpec(name="flips", flip_prob=(0.5, 0.5, 0.5))))
    variants_seen = set()
    for before, after in zip(plain, flipped, strict=True):
        np.testing.assert_array_equal(after.label, after.image[:, 0].astype(np.int64) * 7 % 4)  # oracle
        for b in range(len(before.label)):
            matches = [axes for r in range(4) for axes in itertools.combinations(range(3), r)
                       if np.array_equal(after.image[b, 0], np.flip(before.image[b, 0], axes))]
            assert len(matches) == 1  # exactly one of the 8 flips of the very same patch
            np.testing.assert_array_equal(after.label[b], np.flip(before.label[b], matches[0]))
            variants_seen.add(matches[0])
    assert len(variants_seen) >= 5  # 24 patches with p = 0.5 per axis: several flip combinations occur


def test_flip_probability_is_per_axis() -> None:
    plain = all_batches(sampler(None))
    only_x = all_batches(sampler(AugmentSpec(flip_prob=(1.0, 0.0, 0.0))))
    for before, after in zip(plain, only_x, strict=True):
        np.testing.assert_array_equal(after.image, np.flip(before.image, axis=2))
        np.testing.assert_array_equal(after.label, np.flip(before.label, axis=1))


def test_intensity_transforms_follow_their_formulas_and_leave_labels() -> None:
    plain = all_batches(sampler(None))[0]
    rng = np.random.default_rng(0)
    image = rng.normal(size=plain.image.shape).astype(np.float32)
    batch = PatchBatch(image, plain.label)
    cases = {
        "scale": (AugmentSpec(scale_prob=1.0, scale_range=(2.0, 2.0)), image * 2.0),
        "shift": (AugmentSpec(shift_prob=1.0, shift_range=(0.5, 0.5)), image + 0.5),
    }
    lo, hi = image.min(axis=(1, 2, 3, 4), keepdims=True), image.max(axis=(1, 2, 3, 4), keepdims=True)
    cases["gamma"] = (AugmentSpec(gamma_prob=1.0, gamma_range=(2.0, 2.0)), lo + (hi - lo) * ((image - lo) / (hi - lo)) ** 2)
    for name, (spec, expected) in cases.items():
        out = augment_batch(batch, spec, np.random.default_rng(1))
        np.testing.assert_allclose(out.image, expected, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(out.label, batch.label)
        assert out.image.dtype == np.float32
    noisy = augment_batch(batch, AugmentSpec(noise_prob=1.0, noise_std=(0.3, 0.3)), np.random.default_rng(2))
    assert float(np.std(noisy.image - image)) == pytest.approx(0.3, rel=0.05)
    assert abs(float(np.mean(noisy.image - image))) < 0.02
    never = augment_batch(batch, AugmentSpec(scale_prob=0.0, scale_range=(2.0, 2.0)), np.random.default_rng(3))
    np.testing.assert_array_equal(never.image, image)


def test_probabilities_are_respected_per_patch() -> None:
    image = np.ones((400, 1, 2, 2, 2), np.float32)
    out = augment_batch(PatchBatch(image, np.zeros((400, 2, 2, 2), np.int64)),
                        AugmentSpec(scale_prob=0.25, scale_range=(3.0, 3.0)), np.random.default_rng(4))
    scaled = np.isclose(out.image[:, 0, 0, 0, 0], 3.0)
    assert np.all(scaled | np.isclose(out.image[:, 0, 0, 0, 0], 1.0))
    assert 0.18 < scaled.mean() < 0.32


def test_augmentation_is_deterministic_for_a_seed_and_moves_no_patch() -> None:
    spec = AugmentSpec(name="default", flip_prob=(0.5, 0.5, 0.5), scale_prob=0.5, shift_prob=0.5, gamma_prob=0.5,
                       noise_prob=0.5)
    first, again = all_batches(sampler(spec), 3), all_batches(sampler(spec), 3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
    other = all_batches(sampler(spec, seed=1), 3)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert sampler(spec).epoch_locations(3).tolist() == sampler(None).epoch_locations(3).tolist()
    off = all_batches(sampler(AugmentSpec()), 3)  # every probability 0: exactly the unaugmented batches
    for a, b in zip(off, all_batches(sampler(None), 3), strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_validation_patches_are_never_augmented() -> None:
    spec = spec_of("augmentation=default", "augmentation.noise_prob=1.0", "profile=smoke")
    subjects = [position_subject((24, 24, 24))]
    train, val = patch_sources(subjects, subjects, spec.network.sampling, seed=0)
    unaugmented = PatchSampler(subjects, spec.network.sampling.patch_size, step=spec.network.sampling.patch_size,
                               batch_size=spec.network.sampling.batch_size, seed=1, mode="grid", shuffle=True)
    assert val is not None
    for got, expected in zip(val.batches(5), unaugmented.batches(0), strict=False):
        np.testing.assert_array_equal(got.image, expected.image)
    assert train.augment is not None and train.augment.noise_prob == 1.0
    first = next(train.batches(0))
    assert not np.allclose(first.image[:, 0], np.round(first.image[:, 0]))  # noise: no longer integers


# --- config and record ------------------------------------------------------------------------------------
def test_augmentation_presets_reach_the_sampling_spec_and_the_record() -> None:
    none = spec_of()
    assert not none.network.sampling.augmentation.enabled
    assert effective_settings(none)["sampling"]["augmentation"] == {"name": "none"}
    flips = spec_of("augmentation=flips")
    assert effective_settings(flips)["sampling"]["augmentation"] == {"name": "flips", "flip_prob": [0.5, 0.5, 0.5]}
    default = effective_settings(spec_of("augmentation=default"))["sampling"]["augmentation"]
    assert default["gamma_range"] == [0.7, 1.5] and default["noise_prob"] == 0.1
    assert len({none.config_hash, flips.config_hash, spec_of("augmentation=default").config_hash}) == 3


@pytest.mark.parametrize(("override", "needle"), [
    ("augmentation.flip_prob=[0.5,0.5]", "augmentation.flip_prob=(0.5, 0.5) must be three probabilities"),
    ("augmentation.scale_prob=1.5", "augmentation.scale_prob=1.5 must be a probability in [0, 1]"),
    ("augmentation.gamma_range=[0.0,1.5]", "augmentation.gamma_range=(0.0, 1.5) must be [low, high]"),
    ("augmentation.noise_std=[0.2,0.1]", "augmentation.noise_std=(0.2, 0.1) must be [low, high]"),
    ("+augmentation.rotate_prob=0.5", "augmentation has unknown key 'rotate_prob'"),
])
def test_bad_augmentation_settings_name_the_setting(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec_of(override)
    assert needle in info.value.message
