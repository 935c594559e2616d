"""bench.evaluation.plots: the overlay crop, orientation and error map, on tiny arrays; figures for any number of
classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch

from bench.data.labels import LabelSet
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


LESION = LabelSet(("background", "CSF", "GM", "WM", "lesion"), (0, 1, 2, 3, 10))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def kept_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures ``plots`` saves from now on (still written)."""
    figures: list[Any] = []
    save = plots._save

    def keep(fig: Any, path: Path, dpi: int = 110) -> None:
        figures.append(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def per_subject(classes: tuple[str, ...], shift: float) -> pd.DataFrame:
    return pd.DataFrame([{"seed": "0", "case": f"s{i}", "class": c, "dice": 0.5 + shift + 0.05 * i + 0.01 * k}
                         for i in range(5) for k, c in enumerate(classes)])


@pytest.mark.parametrize("classes", [("CSF", "GM", "WM", "lesion"), ("edema", "tumour"),
                                     ("a", "b", "c", "d", "e", "f")])
def test_boxplots_and_ranks_have_one_panel_per_class(classes: tuple[str, ...], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tables = [per_subject(classes, 0.0), per_subject(classes, 0.1)]
    figures = kept_figures(monkeypatch)
    plots.boxplots(tables, ["1: a torch", "2: b torch"], tmp_path / "box.png")
    ranks = plots.ranking(tables, ["1: a torch", "2: b torch"], tmp_path / "rank.png", tissues=classes)
    for name in ("box.png", "rank.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    for figure in figures:
        shown = [ax for ax in figure.axes if ax.get_visible()]
        assert [ax.get_title().split(" ")[1].rstrip(":") for ax in shown] == list(classes)
    assert ranks["tissue"].unique().tolist() == list(classes)
    assert ranks.query("label == '2: b torch'")["mean_rank"].tolist() == [1.0] * len(classes)


def test_class_colours_keep_the_tissue_colours_and_give_others_the_palette() -> None:
    colours = plots.class_colors(LESION.scored)
    assert [colours[t] for t in ("CSF", "GM", "WM")] == [plots.TISSUE_COLORS[t] for t in ("CSF", "GM", "WM")]
    assert colours["lesion"] == pytest.approx(to_rgb(plots.PALETTE[0]))
    many = plots.class_colors([f"c{i}" for i in range(12)])
    assert len(set(list(many.values())[:10])) == 10 and many["c10"] == many["c0"]  # ten, then again


def test_overlay_legend_names_every_class_of_the_label_set_in_its_colour() -> None:
    truth = np.zeros((30, 20, 25), dtype=np.int16)
    truth[8:22, 4:16, 6:20] = 3
    truth[10:20, 6:14, 8:18] = 2
    truth[12:18, 8:12, 10:16] = 1
    truth[14:16, 9:11, 12:14] = 10
    prediction = np.where(truth == 10, 3, truth)  # the lesion missed: painted as wrong tissue
    figure = plots.overlay_figure(truth * 10.0, (1.0, 1.0, 1.0), IDENTITY, truth, [("model", prediction)],
                                  labels=LESION)
    legend = figure.legends[0]
    names = [text.get_text() for text in legend.get_texts()]
    assert names == ["CSF", "GM", "WM", "lesion", *plots.ERROR_COLORS]
    patches = [h for h in legend.legend_handles if isinstance(h, Patch)]
    colours = dict(zip(names, (to_rgb(h.get_facecolor()) for h in patches), strict=True))
    assert colours["lesion"] == pytest.approx(to_rgb(plots.PALETTE[0]))
    assert colours["CSF"] == pytest.approx(plots.TISSUE_COLORS["CSF"])
    truth_axial = np.asarray(figure.axes[1].images[1].get_array())  # ground truth, axial: the lesion in its colour
    assert any(np.allclose(px[:3], to_rgb(plots.PALETTE[0])) for px in truth_axial.reshape(-1, 4) if px[3] > 0)
    errors = np.asarray(figure.axes[7].images[1].get_array())
    assert np.allclose(errors[errors[..., 3] > 0][:, :3], plots.ERROR_COLORS["wrong tissue"])
    plots._pyplot().close(figure)


def test_history_plot_colours_validation_dice_by_class_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = pd.DataFrame({"patches_seen": [10, 20], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
                            "val_dice_CSF": [0.2, 0.4], "val_dice_lesion": [0.0, 0.1]})
    figures = kept_figures(monkeypatch)
    plots.history_plot(history, tmp_path / "history.png")
    lines = {line.get_label(): line.get_color() for line in figures[0].axes[1].lines}
    assert lines["CSF"] == plots.TISSUE_COLORS["CSF"] and to_rgb(lines["lesion"]) == to_rgb(plots.PALETTE[0])
