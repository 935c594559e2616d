"""Segmentation metrics: Dice, AVD, Hausdorff (max and 95th percentile) and ASSD, spacing in mm.

Pure functions over numpy arrays (numpy and scipy only). Definitions are those of medpy 0.5.2
(``medpy.metric.binary``), and the results equal medpy's ``dc``, ``ravd``, ``hd``, ``hd95`` and ``assd`` to
floating-point rounding:

* **surface** of a mask: the mask minus its binary erosion with the connectivity-1 structure (6-neighbourhood
  in 3D) and ``border_value=0``, i.e. every mask voxel with a 6-neighbour outside the mask or outside the
  volume;
* **directed surface distances** A→B: for every surface voxel of A, the Euclidean distance in mm (voxel
  offsets scaled by ``spacing_mm``) to the nearest surface voxel of B;
* **hd**: the largest directed distance of either direction;
* **hd95** (``hd95_mode="pooled"``, medpy's): the 95th percentile (``numpy.percentile``, linear
  interpolation) of both directions' distances pooled; ``"max_directed"``: the larger of the two directed
  95th percentiles;
* **assd** (medpy 0.5.2's): the mean of both directions' distances pooled, i.e. each surface voxel of either
  mask counts once. (Older medpy releases averaged the two directed means instead; the two agree only when
  both surfaces have the same number of voxels.);
* **dice** = 2|P∩R| / (|P| + |R|); **avd** (absolute volume difference, percent) = |V_P − V_R| / V_R × 100,
  computed from voxel counts (the voxel volume cancels) = ``abs(medpy.ravd) * 100``.

Empty masks (medpy raises on them; this rule is brainbench's own, see ``EMPTY_MASK_RULE``):

* both masks empty: dice 1, avd 0, hd = hd95 = assd = 0;
* reference empty, prediction not: dice 0, avd inf, hd = hd95 = assd = inf;
* prediction empty, reference not: dice 0, avd 100, hd = hd95 = assd = inf.

Speed: one surface computation per class feeds hd, hd95 and assd (:class:`SurfaceDistances`); each class is
cropped to the bounding box of both masks (found for all classes in one pass over each label map) and padded
with zeros, which leaves the erosion unchanged (outside the box both masks are 0, and medpy erodes with
``border_value=0``). Nearest-surface distances are found exactly by testing voxel offsets in order of
increasing physical distance (most surface voxels have a partner within a voxel or two), and with a k-d tree
over the other surface for the few voxels left; every surface voxel lies in the box, so the result is the
same as medpy's distance transform over the whole volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from bench.data.labels import IBSR_LABELS, LabelSet
from bench.types import BoolArray, LabelArray

Hd95Mode = Literal["pooled", "max_directed"]
Backend = Literal["fast", "medpy"]
DistanceArray = npt.NDArray[np.float64]

METRIC_NAMES: Final = ("dice", "avd", "hd", "hd95", "assd")
HD95_MODES: Final = ("pooled", "max_directed")
BACKENDS: Final = ("fast", "medpy")
EMPTY_MASK_RULE: Final = (
    "both masks empty: dice 1, avd 0, hd = hd95 = assd = 0; "
    "reference empty, prediction not: dice 0, avd inf, hd = hd95 = assd = inf; "
    "prediction empty, reference not: dice 0, avd 100, hd = hd95 = assd = inf"
)

_PAD: Final = 3
"""Zero padding (voxels) around each cropped mask: at least 1 for the erosion, and the reach of the offsets."""


@dataclass(frozen=True)
class SurfaceDistances:
    """Both directed surface-distance arrays of one mask pair (mm), with cheap reducers.

    An empty array means that mask is empty (a non-empty mask always has surface voxels), and the reducers
    follow ``EMPTY_MASK_RULE``: 0 when both are empty, inf when only one is.

    Attributes:
        pred_to_ref_mm: For every surface voxel of the prediction, the distance to the nearest reference
            surface voxel.
        ref_to_pred_mm: The same from the reference surface to the prediction surface.
    """

    pred_to_ref_mm: DistanceArray
    ref_to_pred_mm: DistanceArray

    def _empty_value(self) -> float | None:
        n_pred, n_ref = self.pred_to_ref_mm.size, self.ref_to_pred_mm.size
        if n_pred == 0 and n_ref == 0:
            return 0.0
        if n_pred == 0 or n_ref == 0:
            return math.inf
        return None

    def hd(self) -> float:
        """Hausdorff distance (mm): the largest directed distance of either direction."""
        empty = self._empty_value()
        if empty is not None:
            return empty
        return float(max(self.pred_to_ref_mm.max(), self.ref_to_pred_mm.max()))

    def hd95(self, mode: Hd95Mode = "pooled") -> float:
        """95th-percentile Hausdorff distance (mm).

        Args:
            mode: ``"pooled"`` (medpy): percentile of both directions pooled; ``"max_directed"``: the larger
                of the two directed percentiles.
        """
        _check_choice("hd95_mode", mode, HD95_MODES)
        empty = self._empty_value()
        if empty is not None:
            return empty
        if mode == "pooled":
            return float(np.percentile(np.concatenate((self.pred_to_ref_mm, self.ref_to_pred_mm)), 95))
        return float(max(np.percentile(self.pred_to_ref_mm, 95), np.percentile(self.ref_to_pred_mm, 95)))

    def assd(self) -> float:
        """Average symmetric surface distance (mm): mean over both directions' distances pooled (medpy 0.5.2)."""
        empty = self._empty_value()
        if empty is not None:
            return empty
        total = float(self.pred_to_ref_mm.sum()) + float(self.ref_to_pred_mm.sum())
        return total / (self.pred_to_ref_mm.size + self.ref_to_pred_mm.size)


# --------------------------------------------------------------------------------------------------------
# Overlap and volume
# --------------------------------------------------------------------------------------------------------


def dice_from_counts(n_pred: int, n_ref: int, n_both: int) -> float:
    """Dice from voxel counts; 1 when both masks are empty (``EMPTY_MASK_RULE``)."""
    if n_pred + n_ref == 0:
        return 1.0
    return 2.0 * n_both / float(n_pred + n_ref)


def avd_from_counts(n_pred: int, n_ref: int) -> float:
    """Absolute volume difference in percent of the reference volume, from voxel counts.

    Both empty: 0; reference empty, prediction not: inf; prediction empty: 100 (``EMPTY_MASK_RULE``).
    """
    if n_ref == 0:
        return 0.0 if n_pred == 0 else math.inf
    return abs(n_pred - n_ref) / float(n_ref) * 100.0


def dice(pred: npt.ArrayLike, ref: npt.ArrayLike) -> float:
    """Dice coefficient of two masks (non-zero = object); 1 when both are empty."""
    p, r = _as_mask_pair(pred, ref)
    return dice_from_counts(int(np.count_nonzero(p)), int(np.count_nonzero(r)), int(np.count_nonzero(p & r)))


def avd(pred: npt.ArrayLike, ref: npt.ArrayLike) -> float:
    """Absolute volume difference in percent, ``|V_pred − V_ref| / V_ref × 100`` (see ``avd_from_counts``)."""
    p, r = _as_mask_pair(pred, ref)
    return avd_from_counts(int(np.count_nonzero(p)), int(np.count_nonzero(r)))


# --------------------------------------------------------------------------------------------------------
# Surface distances
# --------------------------------------------------------------------------------------------------------


def surface_distances(
    pred: npt.ArrayLike, ref: npt.ArrayLike, spacing_mm: Sequence[float]
) -> SurfaceDistances:
    """Directed surface distances (mm) between two masks, as medpy defines them (module docstring).

    Args:
        pred: Predicted mask (non-zero = object).
        ref: Reference mask, same shape.
        spacing_mm: Voxel size in mm along each array axis.

    Raises:
        ValueError: Shapes differ, or the spacing has the wrong length or a non-positive value.
    """
    p, r = _as_mask_pair(pred, ref)
    spacing = _check_spacing(spacing_mm, p.ndim)
    box = _union_box(_mask_box(p), _mask_box(r))
    if box is None:
        return _empty_distances()
    return _distances_in_box(_padded(p[box]), _padded(r[box]), spacing)


def hausdorff(pred: npt.ArrayLike, ref: npt.ArrayLike, spacing_mm: Sequence[float]) -> float:
    """Hausdorff distance (mm); see ``SurfaceDistances.hd``."""
    return surface_distances(pred, ref, spacing_mm).hd()


def hausdorff95(
    pred: npt.ArrayLike, ref: npt.ArrayLike, spacing_mm: Sequence[float], mode: Hd95Mode = "pooled"
) -> float:
    """95th-percentile Hausdorff distance (mm); see ``SurfaceDistances.hd95``."""
    return surface_distances(pred, ref, spacing_mm).hd95(mode)


def assd(pred: npt.ArrayLike, ref: npt.ArrayLike, spacing_mm: Sequence[float]) -> float:
    """Average symmetric surface distance (mm); see ``SurfaceDistances.assd``."""
    return surface_distances(pred, ref, spacing_mm).assd()


def binary_metrics(
    pred: npt.ArrayLike, ref: npt.ArrayLike, spacing_mm: Sequence[float], hd95_mode: Hd95Mode = "pooled"
) -> dict[str, float]:
    """All five metrics of one mask pair from a single surface computation.

    Returns:
        ``{"dice", "avd", "hd", "hd95", "assd"}``; avd in percent, distances in mm.
    """
    p, r = _as_mask_pair(pred, ref)
    counts = int(np.count_nonzero(p)), int(np.count_nonzero(r)), int(np.count_nonzero(p & r))
    return _metrics(counts, surface_distances(p, r, spacing_mm), hd95_mode)


# --------------------------------------------------------------------------------------------------------
# Label maps
# --------------------------------------------------------------------------------------------------------


def class_name(label: int, labels: LabelSet = IBSR_LABELS) -> str:
    """The name of the class stored as ``label`` in ``labels`` (IBSR: ``"CSF"``, ``"GM"``, ``"WM"``), or
    ``"label_<n>"`` for a value the label set does not name."""
    return labels.names[labels.values.index(label)] if label in labels.values else f"label_{label}"


def evaluate_labels(
    pred: LabelArray,
    ref: LabelArray,
    spacing_mm: Sequence[float],
    classes: Sequence[int] = (1, 2, 3),
    hd95_mode: Hd95Mode = "pooled",
    backend: Backend = "fast",
    labels: LabelSet = IBSR_LABELS,
) -> dict[str, dict[str, float]]:
    """Score every class of a predicted label map against the reference.

    Args:
        pred: Predicted integer label map.
        ref: Reference integer label map, same shape.
        spacing_mm: Voxel size in mm along each array axis.
        classes: Positive stored label values to score.
        hd95_mode: ``"pooled"`` (medpy) or ``"max_directed"``.
        backend: ``"fast"`` (this module) or ``"medpy"`` (medpy's functions, one call per metric; slow,
            for quoting medpy). Both apply ``EMPTY_MASK_RULE``.
        labels: Names the classes (``class_name``); it does not restrict which values are scored.

    Returns:
        ``{class name: {"dice", "avd", "hd", "hd95", "assd"}}`` in the order of ``classes``.

    Raises:
        ValueError: Shapes differ (both are named), bad spacing, non-integer maps, bad class, mode or backend.
    """
    _check_choice("hd95_mode", hd95_mode, HD95_MODES)
    _check_choice("backend", backend, BACKENDS)
    pred_arr, ref_arr = np.asarray(pred), np.asarray(ref)
    _check_shapes(pred_arr.shape, ref_arr.shape)
    for name, arr in (("prediction", pred_arr), ("reference", ref_arr)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} label map has dtype {arr.dtype}; an integer label map is required")
    spacing = _check_spacing(spacing_mm, pred_arr.ndim)
    values = _check_classes(classes)
    names = [class_name(c, labels) for c in values]
    if backend == "medpy":
        return {
            name: _medpy_metrics(pred_arr == c, ref_arr == c, spacing, hd95_mode)
            for name, c in zip(names, values, strict=True)
        }
    scores = _fast_label_metrics(pred_arr, ref_arr, spacing, values, hd95_mode)
    return {name: scores[c] for name, c in zip(names, values, strict=True)}


def _fast_label_metrics(
    pred: LabelArray, ref: LabelArray, spacing: tuple[float, ...], labels: tuple[int, ...], mode: Hd95Mode
) -> dict[int, dict[str, float]]:
    top = max(labels)
    pred_boxes = ndimage.find_objects(pred, max_label=top)  # one pass per map gives every class's box
    ref_boxes = ndimage.find_objects(ref, max_label=top)
    out: dict[int, dict[str, float]] = {}
    for c in labels:
        box = _union_box(pred_boxes[c - 1], ref_boxes[c - 1])
        if box is None:
            out[c] = _metrics((0, 0, 0), _empty_distances(), mode)
            continue
        p = _padded_equal(pred[box], c)
        r = _padded_equal(ref[box], c)
        counts = int(np.count_nonzero(p)), int(np.count_nonzero(r)), int(np.count_nonzero(p & r))
        out[c] = _metrics(counts, _distances_in_box(p, r, spacing), mode)
    return out


def _metrics(counts: tuple[int, int, int], sd: SurfaceDistances, mode: Hd95Mode) -> dict[str, float]:
    n_pred, n_ref, n_both = counts
    return {
        "dice": dice_from_counts(n_pred, n_ref, n_both),
        "avd": avd_from_counts(n_pred, n_ref),
        "hd": sd.hd(),
        "hd95": sd.hd95(mode),
        "assd": sd.assd(),
    }


def _medpy_metrics(
    pred: BoolArray, ref: BoolArray, spacing: tuple[float, ...], mode: Hd95Mode
) -> dict[str, float]:
    """medpy's functions, one call per metric (medpy surfaces are recomputed for each), empty rule first."""
    from medpy.metric import binary as mb  # imported here: only this slow reference backend needs it

    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred == 0 or n_ref == 0:
        return _metrics((n_pred, n_ref, 0), _empty_distances(n_pred > 0, n_ref > 0), mode)
    if mode == "pooled":
        hd95 = float(mb.hd95(pred, ref, voxelspacing=spacing))
    else:  # medpy has no directed percentile; use its own surface distances
        directed = getattr(mb, "__surface_distances")  # medpy module-private name
        hd95 = float(
            max(
                np.percentile(directed(pred, ref, spacing), 95),
                np.percentile(directed(ref, pred, spacing), 95),
            )
        )
    return {
        "dice": float(mb.dc(pred, ref)),
        "avd": abs(float(mb.ravd(pred, ref))) * 100.0,
        "hd": float(mb.hd(pred, ref, voxelspacing=spacing)),
        "hd95": hd95,
        "assd": float(mb.assd(pred, ref, voxelspacing=spacing)),
    }


# --------------------------------------------------------------------------------------------------------
# Core: surfaces and nearest-surface distances inside a zero-padded box
# --------------------------------------------------------------------------------------------------------


def _distances_in_box(
    pred_pad: BoolArray, ref_pad: BoolArray, spacing: tuple[float, ...]
) -> SurfaceDistances:
    """Directed distances between two masks cropped to their union box and zero-padded by ``_PAD``."""
    pred_border = _border(pred_pad)
    ref_border = _border(ref_pad)
    pred_idx = np.flatnonzero(pred_border)
    ref_idx = np.flatnonzero(ref_border)
    if pred_idx.size == 0 or ref_idx.size == 0:
        return _empty_distances(pred_idx.size > 0, ref_idx.size > 0)
    shells = _offset_shells(pred_pad.shape, spacing)
    return SurfaceDistances(
        pred_to_ref_mm=_nearest(pred_idx, ref_border.ravel(), ref_idx, shells, pred_pad.shape, spacing),
        ref_to_pred_mm=_nearest(ref_idx, pred_border.ravel(), pred_idx, shells, pred_pad.shape, spacing),
    )


def _border(mask: BoolArray) -> BoolArray:
    """Mask XOR its erosion (connectivity 1, border_value 0); ``mask`` has a zero outer layer."""
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    inner = mask[core].copy()
    for axis in range(mask.ndim):
        for lo, hi in ((0, -2), (2, None)):
            shifted = list(core)
            shifted[axis] = slice(lo, hi)
            inner &= mask[tuple(shifted)]
    border = np.zeros_like(mask)
    border[core] = mask[core] & ~inner
    return border


def _nearest(
    src_idx: npt.NDArray[np.intp],
    target: BoolArray,
    target_idx: npt.NDArray[np.intp],
    shells: list[tuple[float, npt.NDArray[np.intp]]],
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
) -> DistanceArray:
    """Distance (mm) from each source voxel (flat index) to the nearest true voxel of the flat ``target``.

    Offsets are tried shell by shell in increasing distance, so the first hit is the exact nearest distance;
    voxels with no hit within the shells' reach get their distance from a k-d tree over all target voxels.
    """
    out = np.empty(src_idx.size, dtype=np.float64)
    pending = np.arange(src_idx.size)
    flat = src_idx
    for dist_mm, offsets in shells:
        hit = target[flat + offsets[0]]
        for offset in offsets[1:]:
            hit |= target[flat + offset]
        if hit.any():
            out[pending[hit]] = dist_mm
            keep = ~hit
            pending, flat = pending[keep], flat[keep]
            if flat.size == 0:
                return out
    scale = np.asarray(spacing, dtype=np.float64)
    points = np.column_stack(np.unravel_index(target_idx, shape)) * scale
    # Unbalanced, non-compact nodes and big leaves: the fastest build + few-queries combination measured here.
    tree = cKDTree(points, leafsize=64, balanced_tree=False, compact_nodes=False)
    query = np.column_stack(np.unravel_index(flat, shape)) * scale
    out[pending] = tree.query(query, workers=-1)[0]
    return out


def _offset_shells(
    shape: tuple[int, ...], spacing: tuple[float, ...]
) -> list[tuple[float, npt.NDArray[np.intp]]]:
    """Flat-index offsets within ``_PAD * min(spacing)`` mm, grouped by distance, nearest first.

    Every offset of that length fits in the ``_PAD`` cube, so no offset is missed and none leaves the padded
    box. Distances are computed as scipy's distance transform does (scaled offsets, squared, summed, sqrt).
    """
    scale = np.asarray(spacing, dtype=np.float64)
    steps = np.array(list(itertools.product(range(-_PAD, _PAD + 1), repeat=len(shape))), dtype=np.intp)
    dist = np.sqrt(np.add.reduce((steps * scale) ** 2, axis=1))
    within = dist <= _PAD * scale.min()
    steps, dist = steps[within], dist[within]
    strides = np.array([int(np.prod(shape[i + 1 :])) for i in range(len(shape))], dtype=np.intp)
    flat = steps @ strides
    return [(float(value), flat[dist == value]) for value in np.unique(dist)]


# --------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------

Box = tuple[slice, ...]


def _empty_distances(pred_present: bool = False, ref_present: bool = False) -> SurfaceDistances:
    """Placeholder arrays for empty masks: a present mask gets one inf so the empty rule applies."""
    return SurfaceDistances(
        pred_to_ref_mm=np.full(int(pred_present), math.inf),
        ref_to_pred_mm=np.full(int(ref_present), math.inf),
    )


def _mask_box(mask: BoolArray) -> Box | None:
    """Bounding box of a boolean mask, ``None`` when it is empty."""
    boxes = ndimage.find_objects(mask.view(np.uint8))
    return boxes[0] if boxes else None


def _union_box(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _padded(mask: BoolArray) -> BoolArray:
    return np.pad(mask, _PAD)


def _padded_equal(labels: LabelArray, value: int) -> BoolArray:
    """``labels == value`` written into a zero array padded by ``_PAD`` on every side."""
    out = np.zeros(tuple(s + 2 * _PAD for s in labels.shape), dtype=np.bool_)
    np.equal(labels, value, out=out[tuple(slice(_PAD, -_PAD) for _ in labels.shape)])
    return out


def _as_mask_pair(pred: npt.ArrayLike, ref: npt.ArrayLike) -> tuple[BoolArray, BoolArray]:
    p = np.atleast_1d(np.asarray(pred)).astype(np.bool_, copy=False)
    r = np.atleast_1d(np.asarray(ref)).astype(np.bool_, copy=False)
    _check_shapes(p.shape, r.shape)
    return p, r


def _check_shapes(pred_shape: tuple[int, ...], ref_shape: tuple[int, ...]) -> None:
    if tuple(pred_shape) != tuple(ref_shape):
        raise ValueError(
            f"prediction shape {tuple(pred_shape)} differs from reference shape {tuple(ref_shape)}"
        )


def _check_spacing(spacing_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing_mm, dtype=np.float64)))
    if len(spacing) != ndim:
        raise ValueError(f"spacing_mm {spacing} has {len(spacing)} values for a {ndim}D array")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm {spacing} must be finite and positive")
    return spacing


def _check_classes(classes: Sequence[int]) -> tuple[int, ...]:
    labels = tuple(int(c) for c in classes)
    if not labels or any(c <= 0 for c in labels) or len(set(labels)) != len(labels):
        raise ValueError(
            f"classes {tuple(classes)} must be distinct positive labels (background 0 is not scored)"
        )
    return labels


def _check_choice(setting: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{setting}={value!r} is not one of {', '.join(allowed)}")
