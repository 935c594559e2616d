"""Patch windows: the geometry shared by the training sampler and sliding-window inference.

numpy only. Volumes are indexed ``[x, y, z]``; images may carry a leading channel axis ``[C, X, Y, Z]``.

A patch is named by its start corner ``(x0, y0, z0)`` in volume coordinates; it covers
``[x0, x0 + px) × [y0, y0 + py) × [z0, z0 + pz)``. Along an axis where the volume is smaller than the patch,
the volume is padded symmetrically, MONAI-style: ``(p - n) // 2`` voxels before and the rest after, so the
start is ``-((p - n) // 2)``. Padding is never materialised: voxels of a patch that fall outside the volume
are filled with the pad value at extraction time (images: the subject's per-channel minimum, the
background of a preprocessed image; labels: 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bench.errors import ConfigError
from bench.types import FloatArray, Shape3

IntArray = npt.NDArray[np.integer]
Slices = tuple[slice, slice, slice]


def as_shape3(value: int | Sequence[int], name: str) -> Shape3:
    """Return three positive ints from one int (cubic) or three ints; ConfigError naming ``name`` otherwise."""
    items = [value] * 3 if isinstance(value, int | np.integer) else list(value)
    if len(items) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{name}={value!r} must be one integer or three integers",
                          fix=f"e.g. {name}=32 or {name}=[32, 32, 16]")
    if any(v < 1 for v in items):
        raise ConfigError(f"{name}={value!r} must be positive along every axis")
    return (int(items[0]), int(items[1]), int(items[2]))


def axis_starts(size: int, patch: int, step: int, *, end_aligned: bool) -> IntArray:
    """Patch starts along one axis.

    ``0, step, 2·step, …`` while the patch fits; with ``end_aligned`` a last start ``size - patch`` is added
    when the step does not reach it. A volume no larger than the patch gets the single padded start
    ``-((patch - size) // 2)``.
    """
    if size <= patch:
        return np.array([-((patch - size) // 2)], dtype=np.int64)
    starts = np.arange(0, size - patch + 1, step, dtype=np.int64)
    if end_aligned and starts[-1] != size - patch:
        starts = np.append(starts, size - patch)
    return starts


def patch_window(start: Sequence[int], patch: Shape3, shape: Sequence[int]) -> tuple[Slices, Slices, bool]:
    """Where a patch meets its volume.

    Returns:
        ``(volume_slices, patch_slices, inside)``: ``volume[volume_slices]`` is the part of the volume the
        patch covers, to be placed at ``patch[patch_slices]``; ``inside`` is true when the whole patch lies
        in the volume (no padding needed).
    """
    vol: list[slice] = []
    pat: list[slice] = []
    inside = True
    for s, p, n in zip(start, patch, shape, strict=True):
        s = int(s)
        lo, hi = max(s, 0), min(s + p, n)
        vol.append(slice(lo, hi))
        pat.append(slice(lo - s, hi - s))
        inside = inside and lo == s and hi == s + p
    return (vol[0], vol[1], vol[2]), (pat[0], pat[1], pat[2]), inside


def extract_patch(volume: np.ndarray, start: Sequence[int], patch: Shape3,
                  pad_value: float | np.ndarray, out: np.ndarray) -> None:
    """Copy the patch of ``volume[..., X, Y, Z]`` starting at ``start`` into ``out[..., px, py, pz]``.

    Voxels outside the volume get ``pad_value`` (a scalar, or per channel with shape ``[C, 1, 1, 1]``).
    """
    vol, pat, inside = patch_window(start, patch, volume.shape[-3:])
    if inside:
        out[...] = volume[(Ellipsis, *vol)]
        return
    out[...] = pad_value
    out[(Ellipsis, *pat)] = volume[(Ellipsis, *vol)]


def channel_minimum(image: np.ndarray) -> FloatArray:
    """Per-channel minimum of ``image[C, X, Y, Z]`` as ``float32[C, 1, 1, 1]`` (the background pad value)."""
    return np.asarray([channel.min() for channel in image], dtype=np.float32).reshape(-1, 1, 1, 1)
