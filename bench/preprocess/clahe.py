"""CLAHE (paper §4.1.3), slice by slice, with OpenCV's tiles and clip limit in skimage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from skimage.exposure import equalize_adapthist

from bench.preprocess.base import PreprocessStep
from bench.preprocess.prepared import PreparedCase

OPENCV_HIST_SIZE = 256
"""Histogram bins OpenCV's CLAHE uses for 8-bit images (``histSize``)."""


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
