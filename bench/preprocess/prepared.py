"""Cases on their way through pre-processing: :class:`PreparedCase`, the brain mask and :func:`prepare`.

The brain mask (:func:`brain_mask`) is computed once on the native image by :func:`prepare` and carried
through geometry steps with nearest-neighbour resampling, so intensity steps never redefine it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from bench.data.cohort import Case
from bench.errors import DataError
from bench.io import Volume
from bench.types import LABELS, BoolArray

MASK_DEFINITION_VERSION = 1
"""Bump when :func:`brain_mask` changes meaning (it is part of the preprocessing cache key)."""


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
