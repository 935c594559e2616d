"""The report's figures: Dice box plots (the paper's Figure 6), mean ranks, ranking stability (challengeR's blob
plot and significance map), and tri-planar overlays with error maps (the paper's Figure 8).

Overlays are cropped to the brain (the ground truth's bounding box plus a margin), drawn in millimetres (so
anisotropic voxels keep their shape) in radiological orientation from the image's direction cosines (LPS
world: axial with anterior up and the patient's left on the right, coronal and sagittal with superior up),
and large enough to see a one-voxel rim. Beside every configuration's labels is its error map against the
ground truth: red = tissue where the truth is background (false positive), cyan = background where the truth
is tissue (false negative), yellow = the wrong tissue.

Every figure follows the dataset's label set, whatever its number of classes: one box plot and one rank panel
per scored class (three to a row), one colour per class in overlays and training curves (:func:`class_colors`:
CSF, GM and WM keep their colours, other classes take matplotlib's tab10 colours in a fixed order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.data.labels import IBSR_LABELS, LabelSet
from bench.evaluation.stats import mean_ranks, subject_values, table_classes
from bench.io import write_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bench.evaluation.ranking import RankingStability

Color = tuple[float, float, float]
TISSUE_COLORS: dict[str, Color] = {"CSF": (1.0, 0.55, 0.0), "GM": (0.2, 0.4, 1.0), "WM": (0.1, 0.8, 0.2)}
"""IBSR's classes: CSF orange, GM blue, WM green (in any label set that names them)."""
PALETTE: tuple[str, ...] = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f",
                            "#1f77b4", "#ff7f0e", "#2ca02c")
"""matplotlib's tab10, the colours least like the tissue colours first: for every other class, in order."""
PANELS_PER_ROW = 3
ERROR_COLORS = {"false positive": (1.0, 0.0, 0.0), "false negative": (0.0, 0.9, 1.0),
                "wrong tissue": (1.0, 0.95, 0.0)}
PLANES = ("axial", "coronal", "sagittal")
# plane -> (normal, horizontal, vertical) LPS world axis; screen x grows with +world horizontal
_PLANE_AXES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
_DOWN_IS_PLUS = {"axial": True, "coronal": False, "sagittal": False}  # axial: posterior (+y) down; else superior up
CROP_MARGIN = 4  # voxels around the brain
PANEL_INCHES = 3.6
LEGEND_COLUMNS = 9
DPI = 130
BLOB_AREA = 700.0  # points² of the circle for a rank held in every resample
SIGNIFICANCE_COLORS = ("#f4f4f4", "#c8c8c8", "#d62728")  # not significant, the diagonal, row better than column
MAX_ANNOTATED = 8  # configurations up to which the significance map writes each cell's Holm p


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path, dpi: int = 110) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"), suffix=".png")
    _pyplot().close(fig)


def _hex(color: str) -> Color:
    return (int(color[1:3], 16) / 255, int(color[3:5], 16) / 255, int(color[5:7], 16) / 255)


def class_colors(names: Sequence[str]) -> dict[str, Color]:
    """One colour per class name: CSF, GM and WM keep :data:`TISSUE_COLORS`, the others take :data:`PALETTE` in
    order (cycling past ten)."""
    others = [n for n in names if n not in TISSUE_COLORS]
    colors = {n: _hex(PALETTE[i % len(PALETTE)]) for i, n in enumerate(others)}
    return {n: TISSUE_COLORS[n] if n in TISSUE_COLORS else colors[n] for n in names}


def _value_colors(labels: LabelSet) -> dict[int, Color]:
    """Stored label value -> colour, for the scored classes of ``labels``."""
    colors = class_colors(labels.scored)
    return {value: colors[name] for name, value in zip(labels.scored, labels.values[1:], strict=True)}


def _names(labels: Sequence[str]) -> list[str]:
    return ["\n".join(label.rsplit(" ", 1)) for label in labels]


def _panels(plt: Any, count: int, width: float, height: float) -> tuple[Figure, list[Any]]:
    """``count`` panels sharing the y axis, :data:`PANELS_PER_ROW` to a row (unused ones hidden); ``width`` and
    ``height`` are those of a full row."""
    columns = max(1, min(count, PANELS_PER_ROW))
    rows = max(1, math.ceil(count / PANELS_PER_ROW))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns / PANELS_PER_ROW, height * rows),
                             sharey=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def boxplots(tables: Sequence[pd.DataFrame], labels: Sequence[str], path: Path,
             tissues: Sequence[str] | None = None) -> None:
    """Dice per class per configuration (the paper's Figure 6); one value per subject (mean over seeds).

    ``tissues``: the classes, one panel each (default: those the tables hold, in their order).
    """
    plt = _pyplot()
    tissues = table_classes(tables) if tissues is None else list(tissues)
    fig, axes = _panels(plt, len(tissues), 4 + 1.65 * len(tables), 4.5)
    for ax, tissue in zip(axes, tissues, strict=True):
        ax.boxplot([subject_values(t, "dice", tissue).to_numpy() for t in tables], tick_labels=_names(labels))
        ax.set_title(f"Dice {tissue}")
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def ranking(tables: Sequence[pd.DataFrame], labels: Sequence[str], path: Path, metric: str = "dice",
            tissues: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean rank per configuration and class with its bootstrap 95 % interval; returns the numbers plotted.

    ``tissues``: the classes, one panel each (default: those the tables hold, in their order).
    """
    plt = _pyplot()
    frames = []
    tissues = table_classes(tables) if tissues is None else list(tissues)
    fig, axes = _panels(plt, len(tissues), 13, 1.4 + 0.42 * len(tables))
    positions = np.arange(len(tables))[::-1]
    for ax, tissue in zip(axes, tissues, strict=True):
        ranks = mean_ranks(tables, metric, tissue)
        frames.append(ranks.assign(tissue=tissue, label=list(labels)))
        n = int(ranks["n_subjects"].max()) if len(ranks) else 0
        if n:
            err = np.vstack([ranks["mean_rank"] - ranks["ci_low"], ranks["ci_high"] - ranks["mean_rank"]])
            ax.errorbar(ranks["mean_rank"], positions, xerr=err, fmt="o", color="black", ecolor="grey", capsize=3)
            ax.set_xlim(0.5, len(tables) + 0.5)
            ax.set_xticks(range(1, len(tables) + 1))
        else:
            ax.text(0.5, 0.5, "no subject shared by\nall configurations", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_title(f"{metric.upper()} {tissue}: mean rank over {n} subjects")
        ax.set_xlabel("mean rank (1 = best), 95 % bootstrap CI")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_yticks(positions, labels, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    frame = pd.concat(frames, ignore_index=True)
    return frame[["tissue", "label", *(c for c in frame.columns if c not in ("tissue", "label"))]]


def _ranked(items: RankingStability | Sequence[RankingStability]) -> list[RankingStability]:
    return list(items) if isinstance(items, Sequence) else [items]


def rank_blobs(stabilities: RankingStability | Sequence[RankingStability], path: Path) -> None:
    """challengeR's blob plot, one panel per class (and the all-classes mean): x the configurations by full
    rank, y the rank 1..K; a circle's area is the share of bootstrap resamples at that rank, × the median rank,
    the vertical line the 95 % rank interval, the dotted line the full-data ranks."""
    plt = _pyplot()
    items = _ranked(stabilities)
    k = max(len(s.names) for s in items)
    fig, axes = _panels(plt, len(items), PANELS_PER_ROW * (1.8 + 0.55 * k), 1.8 + 0.45 * k)
    for ax, s in zip(axes, items, strict=True):
        colours = {n: _hex(PALETTE[i % len(PALETTE)]) for i, n in enumerate(s.names)}
        order = s.order
        x = np.arange(1, len(order) + 1)
        ax.plot(x, s.full_rank[order].to_numpy(), color="0.55", linestyle=":", linewidth=1, zorder=1)
        for position, name in zip(x, order, strict=True):
            share = s.frequency.loc[name]
            share = share[share > 0]
            ax.scatter(np.full(len(share), position), share.index, s=BLOB_AREA * share.to_numpy(),
                       color=colours[name], alpha=0.75, edgecolors="none", zorder=2)
            ax.vlines(position, s.rank_low[name], s.rank_high[name], color="black", linewidth=1.2, zorder=3)
            ax.scatter([position], [s.median_rank[name]], marker="x", color="black", s=36, zorder=4)
        ax.set_xticks(x, _names(order), rotation=90, fontsize=7)
        ax.set_xlim(0.4, len(order) + 0.6)
        ax.set_title(f"{s.metric.upper()} {s.tissue}: τ {s.tau_summary()['tau_mean']:.2f}, {len(s.subjects)} "
                     "subjects", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(k + 0.6, 0.4)  # shared: rank 1 on top
    axes[0].set_yticks(range(1, k + 1))
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_ylabel("rank (1 = best)")
    fig.suptitle(f"Rank over {items[0].resamples:,} bootstrap resamples of the subjects: circle area = share of "
                 "resamples, × median rank, line 95 % interval, dotted full-data rank", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def significance_map(stabilities: RankingStability | Sequence[RankingStability], path: Path) -> None:
    """The pairwise significance map, one panel per ranking: cell (row i, column j) coloured where i is better
    than j by a one-sided Wilcoxon signed-rank test, Holm-corrected over all ordered pairs; configurations by
    rank; each cell's Holm p written up to :data:`MAX_ANNOTATED` configurations."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    items = _ranked(stabilities)
    k = max(len(s.names) for s in items)
    columns = min(len(items), PANELS_PER_ROW)
    rows = math.ceil(len(items) / PANELS_PER_ROW)
    side = 2.2 + 0.5 * k
    fig, grid = plt.subplots(rows, columns, figsize=(side * columns, side * rows + 0.5), squeeze=False)
    flat = [ax for row in grid for ax in row]
    for ax in flat[len(items):]:
        ax.set_visible(False)
    for ax, s in zip(flat, items, strict=False):
        order = s.order
        n = len(order)
        significant = s.significant.loc[order, order].to_numpy()
        codes = np.where(np.eye(n, dtype=bool), 1, np.where(significant, 2, 0))
        ax.imshow(codes, cmap=ListedColormap(SIGNIFICANCE_COLORS), vmin=-0.5, vmax=2.5)
        if n <= MAX_ANNOTATED:
            p = s.p_holm.loc[order, order].to_numpy()
            for i, j in zip(*np.nonzero(~np.eye(n, dtype=bool)), strict=True):
                ax.text(j, i, f"{p[i, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="white" if significant[i, j] else "0.3")
        ax.set_xticks(range(n), _names(order), rotation=90, fontsize=7)
        ax.set_yticks(range(n), _names(order), fontsize=7)
        ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("than (column)", fontsize=8)
        ax.set_ylabel("better (row)", fontsize=8)
        ax.set_title(f"{s.metric.upper()} {s.tissue}: {int(significant.sum())} of {n * (n - 1)} pairs", fontsize=9)
    fig.suptitle(f"Row better than column: one-sided Wilcoxon signed-rank, Holm over all ordered pairs, coloured "
                 f"where p < {items[0].alpha} (numbers: Holm p)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def crop_box(mask: np.ndarray, margin: int = CROP_MARGIN) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` widened by ``margin`` voxels and clipped to the array (all of it if empty)."""
    found = np.argwhere(mask)
    if found.size == 0:
        return tuple(slice(0, n) for n in mask.shape)  # type: ignore[return-value]
    low = np.maximum(found.min(axis=0) - margin, 0)
    high = np.minimum(found.max(axis=0) + 1 + margin, mask.shape)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))  # type: ignore[return-value]


def world_axes(direction: Sequence[float]) -> list[tuple[int, float]]:
    """Per array axis, the LPS world axis it runs along and its sign (identity when the matrix is ambiguous)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    world = [int(np.argmax(np.abs(matrix[:, axis]))) for axis in range(3)]
    if sorted(world) != [0, 1, 2]:
        return [(axis, 1.0) for axis in range(3)]
    return [(w, 1.0 if matrix[w, axis] >= 0 else -1.0) for axis, w in enumerate(world)]


def plane_slice(volume: np.ndarray, plane: str, direction: Sequence[float], index: int | None = None
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """A 2D slice for display (rows top to bottom, columns left to right) and its (row, column) array axes.

    ``index`` is along the array axis normal to ``plane`` (default: the middle).
    """
    mapping = world_axes(direction)
    array_axis = {w: axis for axis, (w, _) in enumerate(mapping)}
    normal, horizontal, vertical = (array_axis[w] for w in _PLANE_AXES[plane])
    index = volume.shape[normal] // 2 if index is None else index
    image = np.take(volume, index, axis=normal)
    remaining = [a for a in range(3) if a != normal]
    image = image.transpose(remaining.index(vertical), remaining.index(horizontal))
    if mapping[horizontal][1] < 0:
        image = image[:, ::-1]
    if (mapping[vertical][1] > 0) != _DOWN_IS_PLUS[plane]:
        image = image[::-1, :]
    return image, (vertical, horizontal)


def _label_rgba(labels: np.ndarray, colors: Mapping[int, Color]) -> np.ndarray:
    """``colors``: stored label value -> colour; other values stay clear."""
    rgba = np.zeros((*labels.shape, 4))
    for value, color in colors.items():
        rgba[labels == value] = (*color, 0.55)
    return rgba


def error_rgba(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Red = false positive tissue, cyan = false negative tissue, yellow = wrong tissue; clear elsewhere."""
    rgba = np.zeros((*truth.shape, 4))
    kinds = {"false positive": (prediction > 0) & (truth == 0), "false negative": (prediction == 0) & (truth > 0),
             "wrong tissue": (prediction > 0) & (truth > 0) & (prediction != truth)}
    for kind, where in kinds.items():
        rgba[where] = (*ERROR_COLORS[kind], 0.9)
    return rgba


def overlay_figure(image: np.ndarray, spacing: Sequence[float], direction: Sequence[float], truth: np.ndarray,
                   predictions: Sequence[tuple[str, np.ndarray]], title: str = "",
                   labels: LabelSet = IBSR_LABELS) -> Figure:
    """Rows: the ground truth, then one per configuration; columns: labels and errors in each plane, cropped.

    Every panel is drawn in mm: its image extent is the cropped box's size × spacing along the panel's axes.
    ``truth`` and the predictions hold ``labels``' stored values; the legend names each class in its colour.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    colors = _value_colors(labels)
    box = crop_box(truth > 0 if np.any(truth > 0) else image > 0)
    image, truth = image[box], truth[box]
    vmax = float(np.percentile(image[image > 0], 99.5)) if np.any(image > 0) else 1.0
    rows = [("ground truth", truth), *((name, label_map[box]) for name, label_map in predictions)]
    fig, axes = plt.subplots(len(rows), 2 * len(PLANES), squeeze=False,
                             figsize=(2 * len(PLANES) * PANEL_INCHES, len(rows) * PANEL_INCHES + 0.9))
    for r, (name, label_map) in enumerate(rows):
        for p, plane in enumerate(PLANES):
            grey, (row_axis, col_axis) = plane_slice(image, plane, direction)
            extent = (0.0, grey.shape[1] * spacing[col_axis], grey.shape[0] * spacing[row_axis], 0.0)
            left = plane_slice(label_map, plane, direction)[0]
            overlays = [("image" if r == 0 else "labels", None if r == 0 else _label_rgba(left, colors)),
                        ("ground truth" if r == 0 else "errors", _label_rgba(left, colors) if r == 0
                         else error_rgba(left, plane_slice(truth, plane, direction)[0]))]
            for k, (what, rgba) in enumerate(overlays):
                ax = axes[r][2 * p + k]
                ax.imshow(grey, cmap="gray", vmin=0, vmax=vmax, extent=extent, interpolation="nearest")
                if rgba is not None:
                    ax.imshow(rgba, extent=extent, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{plane} {what}", fontsize=9)
        axes[r][0].set_ylabel(name, fontsize=10)
    handles = [Patch(color=colors[v], label=n) for n, v in zip(labels.scored, labels.values[1:], strict=True)]
    handles += [Patch(color=c, label=n) for n, c in ERROR_COLORS.items()]
    columns = min(len(handles), LEGEND_COLUMNS)
    extra = 0.3 * (math.ceil(len(handles) / columns) - 1)  # inches for each further legend row
    fig.legend(handles=handles, loc="upper center", ncol=columns, fontsize=10, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.35 / fig.get_figheight()))
    fig.suptitle(title, fontsize=12, y=1 - 0.05 / fig.get_figheight(), va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.8 + extra) / fig.get_figheight()))
    return fig


def save_overlays(fig: Figure, path: Path) -> None:
    """Write an :func:`overlay_figure` (at :data:`DPI`)."""
    _save(fig, path, dpi=DPI)


def history_plot(history: pd.DataFrame, path: Path, title: str = "") -> None:
    """Training curves of one run against patches seen: train/val loss, and validation Dice per class.

    ``history`` is ``history.csv``: ``patches_seen``, ``train_loss``, ``val_loss`` and ``val_dice_<class>``
    columns (validation columns may be missing or empty).
    """
    plt = _pyplot()
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = history["patches_seen"] if "patches_seen" in history else history.index + 1
    loss_ax.plot(x, history["train_loss"], label="train loss", color="0.3")
    if "val_loss" in history and history["val_loss"].notna().any():
        loss_ax.plot(x, history["val_loss"], label="validation loss", color="tab:red")
    loss_ax.set_xlabel("training patches seen")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=8)
    loss_ax.grid(alpha=0.3)
    tissues = {c.removeprefix("val_dice_"): c for c in history.columns if c.startswith("val_dice_")}
    colours = class_colors(list(tissues))
    for tissue, column in tissues.items():
        dice_ax.plot(x, history[column], label=tissue, color=colours[tissue])
    dice_ax.set_ylim(0, 1)
    dice_ax.set_xlabel("training patches seen")
    dice_ax.set_ylabel("validation Dice")
    if dice_ax.lines:
        dice_ax.legend(fontsize=8)
    dice_ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
