"""Pre-processing steps of the paper's §4.1, one class per step (re-exported by ``bench.preprocess.pipeline``).

Every step has ``fit(cases)`` (learns from training cases only; a no-op for per-case steps),
``apply(case) -> PreparedCase``, ``params() -> dict`` (its configuration, JSON-able) and ``state() -> dict``
(what ``fit`` learnt, JSON-able; part of the cache key). Steps that change the voxel grid
(``geometric = True``) also have ``output_grid(grid)`` and ``invert_probabilities(probs, before)``, which
brings class probabilities from the step's output grid back to its input grid.

The brain mask (:func:`brain_mask`) is computed once on the native image by :func:`prepare` and carried
through geometry steps with nearest-neighbour resampling, so intensity steps never redefine it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.exposure import equalize_adapthist

from bench.data.cohort import Case
from bench.errors import ConfigError, DataError
from bench.io import Volume
from bench.types import LABELS, BoolArray, FloatArray, Shape3, Spacing

MASK_DEFINITION_VERSION = 1
"""Bump when :func:`brain_mask` changes meaning (it is part of the preprocessing cache key)."""

OPENCV_HIST_SIZE = 256
"""Histogram bins OpenCV's CLAHE uses for 8-bit images (``histSize``)."""


# --------------------------------------------------------------------------------------------------------
# Prepared cases and the brain mask
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedCase:
    """A case on its way through the pipeline.

    Attributes:
        id: Subject id.
        split: The subject's split (``train``, ``val``, ``test``, ``predict``).
        image: Float32 intensities on the current grid.
        label: Uint8 label map on the same grid, or ``None`` when unlabelled.
        mask: Brain mask on the same grid (see :func:`brain_mask`).
        native: The original case, used to invert predictions back to the native grid.
    """

    id: str
    split: str
    image: Volume
    label: Volume | None
    mask: BoolArray
    native: Case

    def with_image(self, array: npt.NDArray[Any]) -> PreparedCase:
        """The same case with new float32 intensities on the same grid."""
        return replace(self, image=self.image.with_array(np.asarray(array, dtype=np.float32)))


def brain_mask(image: Volume, *, min_component_fraction: float = 0.01) -> BoolArray:
    """The brain mask of a skull-stripped image.

    Definition: voxels with intensity ``> 0``, plus every cavity fully enclosed by them in 3D
    (``scipy.ndimage.binary_fill_holes``), keeping only 26-connected components holding at least
    ``min_component_fraction`` of the largest component's voxels (drops isolated specks, keeps e.g. a
    detached cerebellum). IBSR images are exactly 0 outside the brain. Note that the IBSR reference
    labels put ~0.3–1% of their voxels (mostly GM at the brain's outer surface) on zero-valued voxels,
    i.e. outside this mask: use it for intensity statistics and patch skipping, never to erase predictions.

    Args:
        image: The native image.
        min_component_fraction: Size threshold relative to the largest component.

    Returns:
        Boolean array of the image's shape (all ``False`` when no voxel is positive).
    """
    foreground = np.asarray(image.array) > 0
    mask = np.zeros(foreground.shape, dtype=bool)
    box = ndi.find_objects(foreground.astype(np.uint8))
    if not box or box[0] is None:
        return mask
    crop = ndi.binary_fill_holes(foreground[box[0]])
    components, count = ndi.label(crop, structure=np.ones((3, 3, 3), dtype=bool))
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = sizes >= min_component_fraction * sizes.max()
        keep[0] = False
        crop = keep[components]
    mask[box[0]] = crop
    return mask


def prepare(case: Case) -> PreparedCase:
    """The initial :class:`PreparedCase`: float32 image, uint8 label and the brain mask.

    Raises:
        DataError: The label map has values outside 0..3 or a different shape from the image.
    """
    image = case.image.with_array(np.asarray(case.image.array, dtype=np.float32))
    label = None
    if case.label is not None:
        values = case.label.array
        if tuple(values.shape) != image.shape:
            raise DataError(
                f"label shape {tuple(values.shape)} differs from image shape {image.shape} for {case.id}",
                path=case.label_path,
            )
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < min(LABELS) or high > max(LABELS):
            raise DataError(
                f"label values span {low}..{high} for {case.id}; expected {min(LABELS)}..{max(LABELS)}",
                path=case.label_path, fix="map the labels to 0 bg, 1 CSF, 2 GM, 3 WM",
            )
        label = case.label.with_array(np.asarray(values, dtype=np.uint8))
    return PreparedCase(case.id, case.split, image, label, brain_mask(case.image), case)


def array_sha256(array: npt.NDArray[Any]) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# Step base class
# --------------------------------------------------------------------------------------------------------
@dataclass
class PreprocessStep:
    """Base class: a per-case intensity step that learns nothing and keeps the grid."""

    name: ClassVar[str] = ""
    geometric: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def fit(self, cases: Sequence[PreparedCase]) -> None:
        """Learn from the training cases (no-op unless ``stateful``)."""

    def apply(self, case: PreparedCase) -> PreparedCase:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The step's configuration as plain JSON values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init}

    def state(self) -> dict[str, Any]:
        """What ``fit`` learnt (JSON-able); ``{}`` for steps without state."""
        return {}

    def state_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Arrays that ``fit`` learnt beyond ``state()`` (saved with a model as ``.npy``); ``{}`` for most steps."""
        return {}

    def restore(self, state: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Become fitted again from ``state()`` and ``state_arrays()`` saved earlier (no-op without state).

        Raises:
            DataError: The saved state does not fit this step.
        """
        if self.stateful:
            raise NotImplementedError(f"{type(self).__name__} cannot restore its fitted state")

    def output_grid(self, grid: Volume) -> Volume:
        """The grid this step produces from ``grid`` (geometric steps override)."""
        return grid

    def invert_probabilities(self, probs: FloatArray, before: PreparedCase | Volume) -> FloatArray:
        """Probabilities ``[K, X, Y, Z]`` on this step's output grid, back on its input grid."""
        return probs

    def _config_error(self, setting: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"preprocess step {self.name!r}: {setting}={value!r} is invalid; expected {expected}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _float_triple(step: PreprocessStep, setting: str, value: Any) -> Spacing:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise step._config_error(setting, value, "three positive numbers (mm)") from None
    if len(triple) != 3 or not all(math.isfinite(v) and v > 0 for v in triple):
        raise step._config_error(setting, value, "three positive numbers (mm)")
    return triple[0], triple[1], triple[2]


# --------------------------------------------------------------------------------------------------------
# 1. Spacing normalisation
# --------------------------------------------------------------------------------------------------------
def _empty_volume(shape: Shape3, spacing_mm: Spacing, origin_mm: tuple[float, ...], direction: tuple[float, ...]) -> Volume:
    """A grid description: a Volume whose array is a zero-memory broadcast of the right shape."""
    array = np.broadcast_to(np.zeros((), dtype=np.uint8), shape)
    origin = (float(origin_mm[0]), float(origin_mm[1]), float(origin_mm[2]))
    return Volume(array=array, spacing_mm=spacing_mm, origin_mm=origin, direction=tuple(direction))


def _grid_of(before: PreparedCase | Volume) -> Volume:
    return before.image if isinstance(before, PreparedCase) else before


def _resample(array: npt.NDArray[Any], source: Volume, target: Volume, interpolator: int) -> npt.NDArray[Any]:
    """Resample ``array`` (on ``source``'s grid) onto ``target``'s grid; outside the source, nearest value."""
    image = source.with_array(np.ascontiguousarray(array)).to_sitk()
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in target.shape])
    resampler.SetOutputSpacing([float(s) for s in target.spacing_mm])
    resampler.SetOutputOrigin([float(o) for o in target.origin_mm])
    resampler.SetOutputDirection([float(d) for d in target.direction])
    resampler.SetInterpolator(interpolator)
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetOutputPixelType(image.GetPixelID())
    out = resampler.Execute(image)
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def _linear_resample_aligned(maps: FloatArray, source: Volume, target: Volume) -> FloatArray:
    """Linear interpolation of ``maps[K, X, Y, Z]`` from ``source``'s grid onto ``target``'s.

    Both grids must share their direction, so interpolation separates into one 1D pass per axis
    (3-4× faster than SimpleITK here, same values: linear inside, nearest voxel beyond the outer centres).
    """
    direction = np.asarray(source.direction, dtype=np.float64).reshape(3, 3)
    offset_mm = direction.T @ (np.asarray(target.origin_mm, np.float64) - np.asarray(source.origin_mm, np.float64))
    out = maps
    for axis in sorted(range(3), key=lambda a: target.shape[a] / source.shape[a]):  # shrink early
        count = source.shape[axis]
        steps = np.arange(target.shape[axis], dtype=np.float64) * target.spacing_mm[axis]
        position = np.clip((offset_mm[axis] + steps) / source.spacing_mm[axis], 0.0, count - 1)
        lower = np.floor(position).astype(np.intp)
        upper = np.minimum(lower + 1, count - 1)
        shape = [1, 1, 1, 1]
        shape[axis + 1] = -1
        weight = (position - lower).astype(np.float32).reshape(shape)
        below = np.take(out, lower, axis=axis + 1)
        above = np.take(out, upper, axis=axis + 1)
        below *= 1.0 - weight
        above *= weight
        below += above
        out = below
    return out


@dataclass
class SpacingNormalisation(PreprocessStep):
    """Resample to ``target_spacing_mm`` (paper §4.1.1), keeping the physical extent and direction.

    The output grid covers the same box as the input: ``size_out = round(size_in × spacing_in / target)``
    voxels per axis, and the outer corner of voxel 0 stays where it was (origin shifts by half the
    spacing change along each axis, in the image's direction). Images are interpolated linearly, labels
    and the brain mask with nearest neighbour (no new label values). When the target equals the native
    spacing the case is returned unchanged. Points beyond the outermost voxel centres take the nearest
    voxel's value.
    """

    target_spacing_mm: Spacing = (1.0, 1.0, 1.0)
    name: ClassVar[str] = "spacing"
    geometric: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.target_spacing_mm = _float_triple(self, "target_spacing_mm", self.target_spacing_mm)

    def output_grid(self, grid: Volume) -> Volume:
        if tuple(grid.spacing_mm) == self.target_spacing_mm:
            return grid
        direction = np.asarray(grid.direction, dtype=np.float64).reshape(3, 3)
        spacing_in = np.asarray(grid.spacing_mm, dtype=np.float64)
        target = np.asarray(self.target_spacing_mm, dtype=np.float64)
        size = [max(1, round(n * s / t)) for n, s, t in zip(grid.shape, spacing_in, target, strict=True)]
        origin = np.asarray(grid.origin_mm, dtype=np.float64) + direction @ ((target - spacing_in) / 2.0)
        shape: Shape3 = (size[0], size[1], size[2])
        return _empty_volume(shape, self.target_spacing_mm, tuple(origin), grid.direction)

    def apply(self, case: PreparedCase) -> PreparedCase:
        grid = self.output_grid(case.image)
        if grid is case.image:
            return case
        image = _resample(case.image.array, case.image, grid, sitk.sitkLinear).astype(np.float32)
        mask = _resample(case.mask.astype(np.uint8), case.image, grid, sitk.sitkNearestNeighbor).astype(bool)
        label = None
        if case.label is not None:
            values = _resample(case.label.array, case.image, grid, sitk.sitkNearestNeighbor)
            label = Volume(values.astype(np.uint8), grid.spacing_mm, grid.origin_mm, grid.direction)
        volume = Volume(image, grid.spacing_mm, grid.origin_mm, grid.direction)
        return replace(case, image=volume, label=label, mask=mask)

    def invert_probabilities(self, probs: FloatArray, before: PreparedCase | Volume) -> FloatArray:
        """Linear resampling of each class map back to ``before``'s grid, renormalised to sum to 1."""
        native = _grid_of(before)
        grid = self.output_grid(native)
        if tuple(probs.shape[1:]) != grid.shape:
            raise ValueError(f"probabilities of shape {probs.shape} do not match this step's grid {grid.shape}")
        if grid is native:
            return probs
        out = _linear_resample_aligned(np.asarray(probs, dtype=np.float32), grid, native)
        np.clip(out, 0.0, None, out=out)
        total = out.sum(axis=0, keepdims=True)
        empty = total[0] <= 0
        if empty.any():
            out[0][empty] = 1.0
            total[0][empty] = 1.0
        out /= total
        return out


# --------------------------------------------------------------------------------------------------------
# 2. Standardisation
# --------------------------------------------------------------------------------------------------------
@dataclass
class Standardisation(PreprocessStep):
    """Z-score with the mean and standard deviation of the intensities inside the brain mask (§4.1.2).

    Applied to the whole image, so inside the mask the values have mean 0 and std 1, and the background
    (0 in skull-stripped images, or after histogram matching / CLAHE) becomes the constant
    ``-mean / std`` (about -2 to -3 on IBSR). Per case: nothing is learnt.
    """

    name: ClassVar[str] = "standardise"

    def apply(self, case: PreparedCase) -> PreparedCase:
        image = case.image.array
        inside = image[case.mask]
        if inside.size == 0:
            raise DataError(f"{case.id}: empty brain mask, cannot standardise", path=case.native.image_path)
        mean = float(np.mean(inside, dtype=np.float64))
        std = float(np.std(inside, dtype=np.float64))
        if not std > 1e-12 * max(1.0, abs(mean)):
            raise DataError(
                f"{case.id}: constant intensity {mean:g} inside the brain mask, cannot standardise",
                path=case.native.image_path,
            )
        return case.with_image((image - np.float32(mean)) * np.float32(1.0 / std))


# --------------------------------------------------------------------------------------------------------
# 3. Histogram matching
# --------------------------------------------------------------------------------------------------------
@dataclass
class HistogramMatching(PreprocessStep):
    """Match every image's histogram to one training subject's (paper §4.1.2, 7 match points).

    SimpleITK ``HistogramMatchingImageFilter`` with ``levels`` histogram bins and ``match_points``
    quantiles; with ``threshold_at_mean`` only voxels above each image's mean intensity enter the
    histograms (the usual way to ignore the background). The reference is chosen at ``fit`` time among
    the training cases: the first by id (``reference="first"``) or the named one. Voxels outside the
    brain mask are set to 0 afterwards. Put it before standardisation.
    """

    reference: str = "first"
    levels: int = 256
    match_points: int = 7
    threshold_at_mean: bool = True
    name: ClassVar[str] = "histmatch"
    stateful: ClassVar[bool] = True
    _reference_id: str | None = field(default=None, init=False, repr=False)
    _reference_image: Any = field(default=None, init=False, repr=False)
    _reference_sha256: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reference, str) or not self.reference:
            raise self._config_error("reference", self.reference, '"first" or a training subject id')
        for setting in ("levels", "match_points"):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise self._config_error(setting, value, "a positive integer")
        if not isinstance(self.threshold_at_mean, bool | np.bool_):
            raise self._config_error("threshold_at_mean", self.threshold_at_mean, "true or false")

    def fit(self, cases: Sequence[PreparedCase]) -> None:
        """Pick the reference among the ``train`` cases (other splits are ignored)."""
        train = {c.id: c for c in cases if c.split == "train"}
        if not train:
            raise ConfigError("histmatch: no training case to choose the histogram reference from")
        if self.reference == "first":
            chosen = train[min(train)]
        elif self.reference in train:
            chosen = train[self.reference]
        else:
            raise ConfigError(
                f"histmatch reference={self.reference!r} is not a training subject; available: "
                f"{', '.join(sorted(train))}",
                fix='set preprocess histmatch reference to one of them, or "first"',
            )
        array = np.asarray(chosen.image.array, dtype=np.float32)
        self._reference_id = chosen.id
        self._reference_sha256 = array_sha256(array)
        self._reference_image = sitk.GetImageFromArray(np.ascontiguousarray(array))

    def state(self) -> dict[str, Any]:
        if self._reference_id is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        return {"reference_id": self._reference_id, "reference_sha256": self._reference_sha256}

    def state_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The reference image (float32 ``[x, y, z]``) the histograms are matched to."""
        if self._reference_image is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        return {"reference": sitk.GetArrayFromImage(self._reference_image)}

    def restore(self, state: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Use a saved reference image again; DataError when it is missing or not the one ``state`` names."""
        reference = arrays.get("reference")
        if reference is None or reference.ndim != 3:
            raise DataError("histmatch: the saved reference image is missing or not 3D")
        array = np.ascontiguousarray(reference, dtype=np.float32)
        if array_sha256(array) != state.get("reference_sha256"):
            raise DataError(f"histmatch: the saved reference image of {state.get('reference_id')!r} does not match "
                            "its recorded sha256 (corrupt model)")
        self._reference_id = str(state.get("reference_id"))
        self._reference_sha256 = str(state["reference_sha256"])
        self._reference_image = sitk.GetImageFromArray(array)

    def apply(self, case: PreparedCase) -> PreparedCase:
        if self._reference_image is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        matcher = sitk.HistogramMatchingImageFilter()
        matcher.SetNumberOfHistogramLevels(int(self.levels))
        matcher.SetNumberOfMatchPoints(int(self.match_points))
        matcher.SetThresholdAtMeanIntensity(bool(self.threshold_at_mean))
        # Histogram matching is voxel-wise, so geometry is irrelevant: hand SimpleITK the [x, y, z] array as
        # is (it reads it as [z, y, x]) and skip two transposed copies.
        source = sitk.GetImageFromArray(np.ascontiguousarray(case.image.array, dtype=np.float32))
        matched = sitk.GetArrayFromImage(matcher.Execute(source, self._reference_image))
        matched[~case.mask] = 0.0
        return case.with_image(matched)


# --------------------------------------------------------------------------------------------------------
# 4. CLAHE
# --------------------------------------------------------------------------------------------------------
def skimage_clip_limit(opencv_clip_limit: float, hist_size: int = OPENCV_HIST_SIZE) -> float:
    """skimage ``clip_limit`` that reproduces OpenCV's ``clipLimit`` for ``hist_size``-bin histograms.

    OpenCV clips each tile's histogram at ``max(int(clipLimit × tile_pixels / histSize), 1)`` counts
    (``histSize`` = 256 for 8-bit images). skimage 0.26 (``exposure/_adapthist.py``) clips at
    ``int(max(clip_limit × tile_pixels, 1))`` counts, ``tile_pixels`` being its ``kernel_size`` product.
    Both agree when ``clip_limit = clipLimit / histSize``: OpenCV's 2.0 is ``2 / 256 = 0.0078125``
    with ``nbins=256``.
    """
    return float(opencv_clip_limit) / hist_size


def clahe_kernel_size(slice_shape: tuple[int, int], tile_grid: tuple[int, int]) -> tuple[int, int]:
    """skimage ``kernel_size`` giving a ``tile_grid`` of tiles as OpenCV does (``ceil(size / tiles)``)."""
    return (
        max(1, math.ceil(slice_shape[0] / tile_grid[0])),
        max(1, math.ceil(slice_shape[1] / tile_grid[1])),
    )


@dataclass
class Clahe(PreprocessStep):
    """Contrast-limited adaptive histogram equalisation, slice by slice along ``axis`` (paper §4.1.3).

    The volume is first rescaled to [0, 1] with the brain's minimum and maximum (background 0), then each
    slice containing brain goes through ``skimage.exposure.equalize_adapthist`` with 256 bins, an
    OpenCV-like tile grid (:func:`clahe_kernel_size`) and ``clip_limit`` given in OpenCV units, converted
    by :func:`skimage_clip_limit`. Output in [0, 1]; voxels outside the brain mask are 0.

    Differences from OpenCV that remain: skimage stretches each slice to its own min..max before
    quantising (to 2**14 levels, then 253 effective bins) and after equalising, and it redistributes
    clipped counts slightly differently. ``axis=2`` slices along the first axis of a SimpleITK array
    ([z, y, x]), as a per-slice loop over ``sitk.GetArrayFromImage`` does (the paper's likely
    setting); IBSR's acquired 1.5 mm slices are along ``axis=1``.
    """

    axis: int = 2
    tile_grid: tuple[int, int] = (8, 8)
    clip_limit: float = 2.0
    name: ClassVar[str] = "clahe"

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or self.axis not in (0, 1, 2):
            raise self._config_error("axis", self.axis, "0, 1 or 2")
        try:
            grid = tuple(int(t) for t in self.tile_grid)
        except (TypeError, ValueError):
            raise self._config_error("tile_grid", self.tile_grid, "two positive integers") from None
        if len(grid) != 2 or min(grid) < 1:
            raise self._config_error("tile_grid", self.tile_grid, "two positive integers")
        self.tile_grid = (grid[0], grid[1])
        if isinstance(self.clip_limit, bool) or not isinstance(self.clip_limit, int | float) or self.clip_limit < 0:
            raise self._config_error("clip_limit", self.clip_limit, "a number >= 0 (OpenCV units; 0 = no clipping)")
        self.clip_limit = float(self.clip_limit)

    def apply(self, case: PreparedCase) -> PreparedCase:
        image, mask = case.image.array, case.mask
        out = np.zeros(image.shape, dtype=np.float32)
        inside = image[mask]
        if inside.size == 0 or inside.max() <= inside.min():
            return case.with_image(out)
        low, high = float(inside.min()), float(inside.max())
        scaled = np.clip((image - low) / (high - low), 0.0, 1.0).astype(np.float32)
        scaled[~mask] = 0.0
        clip = skimage_clip_limit(self.clip_limit)
        for index in range(image.shape[self.axis]):
            where = [slice(None)] * 3
            where[self.axis] = slice(index, index + 1)
            plane, plane_mask = scaled[tuple(where)].squeeze(self.axis), mask[tuple(where)].squeeze(self.axis)
            if not plane_mask.any() or plane.max() <= plane.min():
                continue
            shape2 = (int(plane.shape[0]), int(plane.shape[1]))
            kernel = clahe_kernel_size(shape2, self.tile_grid)
            equalised = equalize_adapthist(plane, kernel_size=kernel, clip_limit=clip, nbins=OPENCV_HIST_SIZE)
            equalised = np.where(plane_mask, equalised, 0.0)
            out[tuple(where)] = np.expand_dims(equalised.astype(np.float32), self.axis)
        return case.with_image(out)


STEP_TYPES: dict[str, type[PreprocessStep]] = {
    step.name: step for step in (SpacingNormalisation, Standardisation, HistogramMatching, Clahe)
}
"""Step classes by the ``name`` used in configs."""
