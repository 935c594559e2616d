"""Bringing a new scan onto a grid like the training data's, and its probabilities back.

A scan whose direction cosines match none of the training subjects' (another orientation), or whose voxel
size lies outside the training range by more than a factor ``SPACING_FACTOR`` on some axis (and the
model's preprocessing does not resample itself), is resampled (linear) onto a grid with the first training
direction and, when the spacing is off, the median training spacing, covering the scan's physical box.
The class probabilities come back onto the scan's own grid by linear interpolation, renormalised to sum
to 1, so the label map has the scan's shape, spacing, origin and direction.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from bench.io import Volume
from bench.predict.package import ModelInfo
from bench.types import FloatArray

SPACING_FACTOR = 1.25
"""How much finer or coarser than every training subject a scan's voxels may be before it is resampled: a
patch network copes with the spread of one cohort (IBSR18: 0.84-1.0 mm in-plane; the runs themselves
apply it so), not with voxels twice the size."""
DIRECTION_TOLERANCE = 1e-3


def _matrix(direction: tuple[float, ...]) -> np.ndarray:
    return np.asarray(direction, dtype=np.float64).reshape(3, 3)


def working_grid(image: Volume, info: ModelInfo) -> Volume | None:
    """The grid to predict ``image`` on, or ``None`` when its own grid is like the training data's."""
    grid = info.training_grid
    if not grid.directions:
        return None
    direction = _matrix(image.direction)
    same = [np.allclose(direction, _matrix(d), atol=DIRECTION_TOLERANCE) for d in grid.directions]
    target_direction = _matrix(grid.directions[same.index(True)] if any(same) else grid.directions[0])
    # the scan's voxel size along the target axes (each target axis matched to the closest scan axis)
    alignment = np.abs(target_direction.T @ direction)  # [target axis, scan axis]
    spacing = np.asarray(image.spacing_mm)[np.argmax(alignment, axis=1)]
    spacings = np.asarray(grid.spacings, dtype=np.float64)
    low, high = spacings.min(axis=0) / SPACING_FACTOR, spacings.max(axis=0) * SPACING_FACTOR
    off_spacing = not info.resamples_spacing and bool(np.any((spacing < low) | (spacing > high)))
    if any(same) and not off_spacing:
        return None
    target_spacing = np.median(spacings, axis=0) if off_spacing else spacing
    # the physical box of the scan's voxel centres, in target axes
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64)
    corners *= (np.asarray(image.shape, dtype=np.float64) - 1) * np.asarray(image.spacing_mm)
    world = corners @ direction.T + np.asarray(image.origin_mm)
    local = world @ target_direction
    start, stop = local.min(axis=0), local.max(axis=0)
    shape = np.maximum(1, np.round((stop - start) / target_spacing).astype(int) + 1)
    origin = target_direction @ start
    return Volume(np.broadcast_to(np.zeros((), np.uint8), tuple(int(s) for s in shape)),
                  (float(target_spacing[0]), float(target_spacing[1]), float(target_spacing[2])),
                  (float(origin[0]), float(origin[1]), float(origin[2])),
                  tuple(float(v) for v in target_direction.ravel()))


def _resample(array: np.ndarray, source: Volume, target: Volume, default: float) -> np.ndarray:
    image = source.with_array(np.ascontiguousarray(array)).to_sitk()
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(target.with_array(np.zeros(target.shape, np.uint8)).to_sitk())
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(default)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out = resampler.Execute(image)
    return np.ascontiguousarray(sitk.GetArrayFromImage(out).transpose(2, 1, 0))


def resample_image(image: Volume, grid: Volume) -> Volume:
    """``image`` linearly resampled onto ``grid`` (float32; 0 outside the scan)."""
    return grid.with_array(_resample(np.asarray(image.array, np.float32), image, grid, 0.0))


def probabilities_back(probs: FloatArray, grid: Volume, image: Volume) -> FloatArray:
    """Class maps ``[K, ...]`` on ``grid`` back on ``image``'s grid (linear, renormalised; background where
    nothing maps)."""
    out = np.stack([_resample(p, grid, image, 1.0 if k == 0 else 0.0) for k, p in enumerate(probs)])
    np.clip(out, 0.0, None, out=out)
    total = out.sum(axis=0)
    empty = total <= 0
    out[0][empty], total[empty] = 1.0, 1.0
    return (out / total).astype(np.float32)
