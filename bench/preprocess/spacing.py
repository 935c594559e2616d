"""Spacing normalisation (paper §4.1.1): resample to a target voxel spacing and back."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from bench.io import Volume
from bench.preprocess.base import PreprocessStep, float_triple
from bench.preprocess.prepared import PreparedCase
from bench.types import FloatArray, Shape3, Spacing


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
        self.target_spacing_mm = float_triple(self, "target_spacing_mm", self.target_spacing_mm)

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
