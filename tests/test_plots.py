"""bench.evaluation.plots: the overlay crop, orientation and error map, on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from bench.evaluation import plots

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_crop_box_is_the_bounding_box_plus_margin_clipped_to_the_array() -> None:
    mask = np.zeros((20, 30, 40), dtype=bool)
    mask[5:8, 1:10, 30:39] = True
    assert plots.crop_box(mask, margin=3) == (slice(2, 11), slice(0, 13), slice(27, 40))
    assert plots.crop_box(mask, margin=0) == (slice(5, 8), slice(1, 10), slice(30, 39))
    assert plots.crop_box(np.zeros((4, 5, 6), dtype=bool)) == (slice(0, 4), slice(0, 5), slice(0, 6))


def test_plane_slice_orients_lps_radiologically() -> None:
    volume = np.zeros((4, 5, 6))
    volume[3, 0, 5] = 1  # +x (left), y = 0 (anterior), +z (superior)
    axial, axes = plots.plane_slice(volume, "axial", IDENTITY, index=5)
    assert axes == (1, 0) and axial.shape == (5, 4) and axial[0, 3] == 1  # anterior up, left on the right
    coronal, axes = plots.plane_slice(volume, "coronal", IDENTITY, index=0)
    assert axes == (2, 0) and coronal.shape == (6, 4) and coronal[0, 3] == 1  # superior up
    sagittal, axes = plots.plane_slice(volume, "sagittal", IDENTITY, index=3)
    assert axes == (2, 1) and sagittal.shape == (6, 5) and sagittal[0, 0] == 1  # superior up, anterior left
    flipped = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # array x runs right, y anterior (IBSR's header)
    axial, _ = plots.plane_slice(volume, "axial", flipped, index=5)
    assert axial[-1, 0] == 1  # array (3, 0) is now world right and posterior: bottom left


def test_error_map_colours_false_positives_negatives_and_wrong_tissue() -> None:
    truth = np.array([[0, 1, 2, 3]])
    prediction = np.array([[2, 0, 3, 3]])
    rgba = plots.error_rgba(prediction, truth)
    assert tuple(rgba[0, 0, :3]) == plots.ERROR_COLORS["false positive"]
    assert tuple(rgba[0, 1, :3]) == plots.ERROR_COLORS["false negative"]
    assert tuple(rgba[0, 2, :3]) == plots.ERROR_COLORS["wrong tissue"]
    assert rgba[0, 3, 3] == 0  # right: clear


def test_overlay_figure_panels_span_the_cropped_box_in_mm() -> None:
    truth = np.zeros((30, 20, 25), dtype=np.int16)
    truth[10:20, 5:15, 8:18] = 2
    spacing = (0.9, 1.5, 1.2)
    figure = plots.overlay_figure(truth * 10.0, spacing, IDENTITY, truth, [("model", truth)])
    box = plots.crop_box(truth > 0)
    size = [s.stop - s.start for s in box]
    axial, coronal, sagittal = (figure.axes[i].images[0].get_extent() for i in (0, 2, 4))
    assert axial == pytest.approx([0, size[0] * spacing[0], size[1] * spacing[1], 0])
    assert coronal == pytest.approx([0, size[0] * spacing[0], size[2] * spacing[2], 0])
    assert sagittal == pytest.approx([0, size[1] * spacing[1], size[2] * spacing[2], 0])
    width, height = figure.get_size_inches()
    assert width >= 6 * 3 and height >= 2 * 3  # 3 planes × (labels, errors), ground truth + 1 model
    errors = np.asarray(figure.axes[7].images[1].get_array())
    assert errors[..., 3].max() == 0  # a perfect prediction: no error painted
    plots._pyplot().close(figure)
