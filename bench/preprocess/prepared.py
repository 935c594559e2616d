"""Cases on their way through pre-processing: :class:`PreparedCase`, the brain mask and :func:`prepare`.

The brain mask (:func:`brain_mask`) is computed once on the native image by :func:`prepare` and carried
through geometry steps with nearest-neighbour resampling, so intensity steps never redefine it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from bench.data.cohort import Case
from bench.errors import DataError
from bench.io import Volume
from bench.types import BoolArray, FloatArray

MASK_DEFINITION_VERSION = 1
"""Bump when :func:`brain_mask` changes meaning (it is part of the preprocessing cache key)."""


@dataclass(frozen=True)
class PreparedCase:
    """A case on its way through the pipeline.

    Attributes:
        id: Subject id.
        split: The subject's split (``train``, ``val``, ``test``, ``predict``).
        image: Float32 intensities of the first input channel on the current grid.
        label: Uint8 class indices on the same grid, or ``None`` when unlabelled.
        mask: Brain mask on the same grid (see :func:`brain_mask`).
        native: The original case, used to invert predictions back to the native grid.
        extra: Float32 input channels 1 .. N-1 on the same grid (empty for one channel).
    """

    id: str
    split: str
    image: Volume
    label: Volume | None
    mask: BoolArray
    native: Case
    extra: tuple[Volume, ...] = ()

    def with_image(self, array: npt.NDArray[Any]) -> PreparedCase:
        """The same case with new float32 intensities on the same grid."""
        return replace(self, image=self.image.with_array(np.asarray(array, dtype=np.float32)))

    @property
    def num_channels(self) -> int:
        return 1 + len(self.extra)

    def channel(self, index: int) -> PreparedCase:
        """Input channel ``index`` alone (mask, label and native case kept): what a step applies to."""
        if index == 0:
            return replace(self, extra=()) if self.extra else self
        return replace(self, image=self.extra[index - 1], extra=())

    def with_channels(self, channels: Sequence[PreparedCase]) -> PreparedCase:
        """Channel 0's case with every channel's image: the inverse of :meth:`channel` after a step."""
        return replace(channels[0], extra=tuple(c.image for c in channels[1:]))

    def network_input(self) -> FloatArray:
        """The intensities a network sees: ``float32[X, Y, Z]`` for one channel, ``[C, X, Y, Z]`` for several."""
        if not self.extra:
            return self.image.array
        return np.stack([self.image.array, *(v.array for v in self.extra)]).astype(np.float32, copy=False)


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


def prepare(case: Case, num_classes: int | None = None) -> PreparedCase:
    """The initial :class:`PreparedCase`: float32 channels, uint8 class indices and the brain mask (of the first
    channel).

    Raises:
        DataError: The label map has class indices of ``num_classes`` or more (or outside uint8) or a different
            shape from the image; an input channel on another grid.
    """
    image = case.image.with_array(np.asarray(case.image.array, dtype=np.float32))
    extra = []
    for number, (volume, path) in enumerate(zip(case.extra, case.extra_paths or (None,) * len(case.extra),
                                                 strict=True), start=1):
        if volume.shape != image.shape:
            raise DataError(f"channel {number} of {case.id} has shape {volume.shape}, channel 0 {image.shape}",
                            path=path)
        extra.append(volume.with_array(np.asarray(volume.array, dtype=np.float32)))
    top = (num_classes - 1) if num_classes is not None else 255  # the cohort checked them against its labels
    label = None
    if case.label is not None:
        values = case.label.array
        if tuple(values.shape) != image.shape:
            raise DataError(
                f"label shape {tuple(values.shape)} differs from image shape {image.shape} for {case.id}",
                path=case.label_path,
            )
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > top:
            raise DataError(
                f"label values span {low}..{high} for {case.id}; expected class indices 0..{top}",
                path=case.label_path, fix="load the case with its dataset's label set (bench.data.cohort.load_cohort)",
            )
        label = case.label.with_array(np.asarray(values, dtype=np.uint8))
    return PreparedCase(case.id, case.split, image, label, brain_mask(case.image), case, tuple(extra))


def array_sha256(array: npt.NDArray[Any]) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{tuple(array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
