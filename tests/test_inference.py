"""Tests for bench.patching.inference.predict_volume: exact reconstruction, blending, mask skipping, batching."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import ConfigError, DataError
from bench.patching.grid import Blending, GridSampler
from bench.patching.inference import background_outside_mask, predict_volume, predict_volume_with_stats
from bench.types import FloatArray


def identity(batch: FloatArray) -> FloatArray:
    return batch.copy()


def content_model(batch: FloatArray) -> FloatArray:
    """Softmax-like output that depends on each voxel and on its whole patch (the patch mean).

    An all-zero patch gives exactly ``[1, 0, 0, 0]`` (certain background) at every voxel.
    """
    x = batch[:, 0]
    level = np.abs(x) + np.abs(batch).mean(axis=(1, 2, 3, 4))[:, None, None, None]
    s = np.tanh(level)
    out = np.stack([1 - s, s * 0.5, s * 0.3 * (1 + np.sin(x)) / 2, s * (0.2 + 0.15 * (1 - np.sin(x)))], axis=1)
    return out.astype(np.float32)


CASES = [
    ((16, 16, 16), 8),  # step 4 divides
    ((19, 23, 17), 8),  # does not divide: end-aligned last patch
    ((19, 23, 17), (4, 8, 6)),  # anisotropic patch
    ((5, 23, 17), (8, 6, 4)),  # smaller than the patch along x: padded
]


@pytest.mark.parametrize(("shape", "patch"), CASES)
def test_identity_mean_blending_reconstructs_bit_for_bit(shape: tuple[int, int, int], patch: int) -> None:
    image = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32) * 100
    out = predict_volume(identity, image, patch, num_classes=2, blending="mean", batch_size=5)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(("shape", "patch"), CASES)
def test_identity_gaussian_blending_reconstructs_to_1e6(shape: tuple[int, int, int], patch: int) -> None:
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    out = predict_volume(identity, image, patch, num_classes=1, blending="gaussian", overlap=0.25)
    np.testing.assert_allclose(out[0], image, rtol=0, atol=1e-6)


def test_gaussian_weights_are_normalised() -> None:
    probabilities = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)

    def constant(batch: FloatArray) -> FloatArray:
        return np.broadcast_to(probabilities[None, :, None, None, None], (len(batch), 4, *batch.shape[2:])).copy()

    out = predict_volume(constant, np.zeros((21, 18, 13), np.float32), (8, 6, 10))
    # float32 sums (as MONAI): a few ulps of rounding, not a weighting error
    np.testing.assert_allclose(out, np.broadcast_to(probabilities[:, None, None, None], out.shape), atol=5e-7)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)


def test_gaussian_blending_weights_patch_centres_more() -> None:
    # Each patch reports its own start x; with gaussian blending a voxel leans to the patch it is central in.
    def start_marker(batch: FloatArray) -> FloatArray:
        return batch[:, :1].min(axis=(2, 3, 4), keepdims=True) + np.zeros_like(batch[:, :1])

    image = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 4, 4)).copy()
    # patches start at x = 0, 4, 8 and cover y, z whole; weights at y = z = 1 are far above the 1e-3 floor
    mean = predict_volume(start_marker, image, (8, 4, 4), num_classes=1, blending="mean")[0]
    gauss = predict_volume(start_marker, image, (8, 4, 4), num_classes=1, blending="gaussian")[0]
    # voxel x=6 is 2.5 from the centre of the patch at 0 and 1.5 from that at 4: gaussian leans to 4
    assert mean[6, 1, 1] == pytest.approx(2.0)
    assert gauss[6, 1, 1] > 3.4


@pytest.mark.slow  # importing monai + torch alone takes ~15 s on a loaded 2-core machine
def test_matches_monai_sliding_window_inference() -> None:
    monai_inferers = pytest.importorskip("monai.inferers")
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(2).standard_normal((21, 30, 11)).astype(np.float32)
    cases: tuple[tuple[Blending, str], ...] = (("gaussian", "gaussian"), ("mean", "constant"))
    for blending, mode in cases:
        ours = predict_volume(content_model, image, (8, 12, 16), blending=blending, pad_value=0.0)
        theirs = monai_inferers.sliding_window_inference(
            torch.from_numpy(image[None, None]), (8, 12, 16), 8,
            lambda t: torch.from_numpy(content_model(t.numpy())), overlap=0.5, mode=mode).numpy()[0]
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def brain_case() -> tuple[FloatArray, np.ndarray]:
    shape = (40, 36, 30)
    mask = np.zeros(shape, dtype=bool)
    mask[14:24, 12:22, 10:18] = True
    image = np.where(mask, np.random.default_rng(3).random(shape, dtype=np.float32) + 0.5, 0).astype(np.float32)
    return image, mask


def test_mask_skipping_changes_nothing_for_a_model_that_sees_empty_patches_as_background() -> None:
    image, mask = brain_case()
    calls: list[int] = []

    def counted(batch: FloatArray) -> FloatArray:
        calls.append(len(batch))
        return content_model(batch)

    full, full_stats = predict_volume_with_stats(counted, image, 8, batch_size=4)
    seen_without_mask = sum(calls)
    calls.clear()
    skipped, stats = predict_volume_with_stats(counted, image, 8, batch_size=4, mask=mask)
    np.testing.assert_array_equal(skipped, full)
    assert full_stats.num_skipped == 0 and full_stats.num_patches == seen_without_mask == 9 * 8 * 7  # z: 0,4,…,20 and 22
    # brute force: patches whose one-voxel-grown window misses the mask
    grid = GridSampler(image.shape, 8)
    outside = sum(not mask[max(x - 1, 0):x + 9, max(y - 1, 0):y + 9, max(z - 1, 0):z + 9].any()
                  for x, y, z in grid.locations)
    assert stats.num_skipped == outside > 0
    assert sum(calls) == stats.num_predicted == stats.num_patches - outside
    assert stats.num_batches == -(-stats.num_predicted // 4)


def test_skipped_patches_are_certain_background() -> None:
    image, mask = brain_case()

    def always_gm(batch: FloatArray) -> FloatArray:
        out = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
        out[:, 2] = 1.0
        return out

    out = predict_volume(always_gm, image, 8, mask=mask, blending="mean")
    assert (out[:, mask] == np.array([0, 0, 1, 0], np.float32)[:, None]).all()  # only predicted patches there
    # voxels that no predicted patch reaches are background with probability 1
    far = np.zeros_like(mask)
    far[:4] = True
    assert (out[0, far] == 1.0).all() and (out[1:, far] == 0.0).all()
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)


@pytest.mark.parametrize("blending", ["mean", "gaussian"])
def test_batch_size_does_not_change_the_result(blending: str) -> None:
    image, mask = brain_case()
    results = [predict_volume(content_model, image, (8, 6, 10), batch_size=b, mask=mask, blending=blending)  # type: ignore[arg-type]
               for b in (1, 3, 8, 64)]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_bad_inputs() -> None:
    image = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ConfigError, match=r"returned shape \(2, 1, 4, 4, 4\), expected \(2, 4, 4, 4, 4\)"):
        predict_volume(identity, image, 4, batch_size=2)
    with pytest.raises(DataError, match=r"mask shape \(8, 8, 7\)"):
        predict_volume(content_model, image, 4, mask=np.ones((8, 8, 7), bool))
    with pytest.raises(ConfigError, match=r"overlap=1\.5"):
        predict_volume(content_model, image, 4, overlap=1.5)
    with pytest.raises(ConfigError, match="batch_size=0"):
        predict_volume(content_model, image, 4, batch_size=0)
    with pytest.raises(ConfigError, match="blending='max'"):
        predict_volume(content_model, image, 4, blending="max")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"shape \(8, 8\)"):
        predict_volume(content_model, np.zeros((8, 8), np.float32), 4)


def test_background_outside_mask_keeps_a_cube_margin_and_counts_what_it_clears() -> None:
    probabilities = np.full((4, 9, 9, 9), 0.25, dtype=np.float32)
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[4, 4, 4] = True
    cleared = background_outside_mask(probabilities, mask, margin_voxels=2)
    kept = np.zeros_like(mask)
    kept[2:7, 2:7, 2:7] = True  # chessboard distance <= 2
    assert cleared == 9 ** 3 - 5 ** 3
    assert np.all(probabilities[:, kept] == 0.25)
    assert np.all(probabilities[0, ~kept] == 1.0) and np.all(probabilities[1:, ~kept] == 0.0)
    again = np.full((4, 9, 9, 9), 0.25, dtype=np.float32)
    assert background_outside_mask(again, mask, margin_voxels=0) == 9 ** 3 - 1


def test_background_outside_mask_refuses_bad_margins_and_shapes() -> None:
    probabilities = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ConfigError, match="margin_voxels=-1"):
        background_outside_mask(probabilities, np.ones((3, 3, 3), bool), -1)
    with pytest.raises(DataError, match="differs from prediction shape"):
        background_outside_mask(probabilities, np.ones((3, 3, 4), bool), 1)
