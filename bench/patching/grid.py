"""Inference tiling: ``GridSampler`` covers a volume with patches, ``GridAggregator`` blends their outputs.

numpy only; patch coordinates and padding follow ``bench.patching.windows``. Start positions and the
Gaussian importance map match MONAI's ``sliding_window_inference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.errors import ConfigError
from bench.patching.windows import IntArray, as_shape3, axis_starts, patch_window
from bench.types import FloatArray, Shape3

Blending = Literal["mean", "gaussian"]

BLENDINGS: tuple[str, ...] = ("mean", "gaussian")


class GridSampler:
    """Sliding-window patch starts covering a whole volume (MONAI's ``dense_patch_slices`` positions).

    Along each axis: ``0, step, 2·step, …`` and a last start ``size - patch`` aligned to the end when the
    step does not reach it. ``step = max(1, int(patch · (1 - overlap)))`` unless given. An axis smaller
    than the patch gets one start ``-((patch - size) // 2)``: the volume is padded symmetrically (lazily,
    see ``extract_patch``) and the aggregator crops the padding away.

    Attributes:
        locations: ``int64[N, 3]`` starts, x slowest, z fastest.
    """

    def __init__(self, volume_shape: Sequence[int], patch_size: int | Sequence[int], overlap: float = 0.5,
                 *, step: int | Sequence[int] | None = None) -> None:
        self.volume_shape: Shape3 = as_shape3(tuple(volume_shape), "volume_shape")
        self.patch_size: Shape3 = as_shape3(patch_size, "patch_size")
        if step is None:
            if not 0.0 <= overlap < 1.0:
                raise ConfigError(f"overlap={overlap!r} must be in [0, 1)")
            step = tuple(max(1, int(p * (1.0 - overlap))) for p in self.patch_size)
        self.step: Shape3 = as_shape3(step, "step")
        starts = [axis_starts(n, p, s, end_aligned=True)
                  for n, p, s in zip(self.volume_shape, self.patch_size, self.step, strict=True)]
        grid = np.meshgrid(*starts, indexing="ij")
        self.locations: npt.NDArray[np.int64] = np.stack(grid, axis=-1).reshape(-1, 3).astype(np.int64)

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def needs_padding(self) -> bool:
        """True when the volume is smaller than the patch along some axis."""
        return any(n < p for n, p in zip(self.volume_shape, self.patch_size, strict=True))


def importance_map(patch_size: Shape3, blending: Blending = "gaussian",
                   sigma_scale: float | Sequence[float] = 0.125) -> FloatArray:
    """Per-voxel patch weights, as MONAI's ``compute_importance_map``.

    ``mean``: ones. ``gaussian``: the product over axes of ``exp(-x² / (2σ²))`` with ``x`` the distance
    to the patch centre (``-(p-1)/2 … (p-1)/2``) and ``σ = sigma_scale · p``, in float32, then clipped
    from below at ``max(min(map), 1e-3)`` so corners never get zero weight.
    """
    if blending not in BLENDINGS:
        raise ConfigError(f"blending={blending!r} is unknown", fix="use mean or gaussian")
    if blending == "mean":
        return np.ones(patch_size, dtype=np.float32)
    scales = [float(sigma_scale)] * 3 if isinstance(sigma_scale, int | float) else [float(s) for s in sigma_scale]
    if len(scales) != 3 or any(not s > 0 for s in scales):
        raise ConfigError(f"sigma_scale={sigma_scale!r} must be one positive number or three")
    weights: FloatArray | None = None
    for axis, (p, scale) in enumerate(zip(patch_size, scales, strict=True)):
        x = np.arange(p, dtype=np.float32) - np.float32((p - 1) / 2.0)
        g = np.exp(x * x / np.float32(-2.0 * (scale * p) ** 2)).astype(np.float32)
        weights = g if weights is None else weights[..., None] * g.reshape((1,) * axis + (p,))
    assert weights is not None
    return np.maximum(weights, np.float32(max(float(weights.min()), 1e-3))).astype(np.float32)


class GridAggregator:
    """Blends patch outputs into a whole-volume ``float32[K, X, Y, Z]`` (weighted average).

    Mean blending sums in float64, so an identity model returns its input bit for bit. Gaussian
    blending sums in float32, as MONAI's ``sliding_window_inference`` does: it halves the memory
    traffic of the accumulation and of the final division, and the result differs from float64 sums
    by float32 rounding only (~1e-7 on probabilities). Memory: ``K + 1`` volumes of that dtype.

    Args:
        sampler: The grid whose locations will be added.
        num_channels: Output channels K.
        blending: ``mean`` (plain average) or ``gaussian`` (see ``importance_map``).
        sigma_scale: Gaussian sigma as a fraction of the patch size, per axis or for all.
        accumulate_dtype: Override the sums' dtype (float32 or float64); None picks as above.
    """

    def __init__(self, sampler: GridSampler, num_channels: int, blending: Blending = "mean",
                 sigma_scale: float | Sequence[float] = 0.125,
                 accumulate_dtype: type[np.floating] | None = None) -> None:
        if num_channels < 1:
            raise ConfigError(f"num_channels={num_channels!r} must be >= 1")
        self.sampler = sampler
        self.num_channels = num_channels
        self.blending = blending
        self.weights = importance_map(sampler.patch_size, blending, sigma_scale)
        self._uniform = blending == "mean"
        if accumulate_dtype is None:
            accumulate_dtype = np.float64 if self._uniform else np.float32
        self.accumulate_dtype = np.dtype(accumulate_dtype)
        if self.accumulate_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"accumulate_dtype={self.accumulate_dtype} must be float32 or float64")
        self._sum = np.zeros((num_channels, *sampler.volume_shape), dtype=self.accumulate_dtype)
        self._weight_sum = np.zeros(sampler.volume_shape, dtype=self.accumulate_dtype)
        self._scratch = np.empty((num_channels, *sampler.patch_size), dtype=np.float32)

    def add(self, outputs: np.ndarray, locations: IntArray) -> None:
        """Accumulate ``outputs[B, K, px, py, pz]`` predicted at ``locations[B, 3]``."""
        expected = (len(locations), self.num_channels, *self.sampler.patch_size)
        if outputs.shape != expected:
            raise ConfigError(f"patch outputs have shape {outputs.shape}, expected {expected}",
                              fix="num_classes must match the model's output channels")
        for output, start in zip(outputs, locations, strict=True):
            vol, pat, _ = patch_window(start, self.sampler.patch_size, self.sampler.volume_shape)
            target = self._sum[(slice(None), *vol)]
            patch_output = output[(slice(None), *pat)]
            if self._uniform:
                target += patch_output
                self._weight_sum[vol] += 1.0
            else:
                weights = self.weights[pat]
                scratch = self._scratch[(slice(None), *pat)]
                np.multiply(patch_output, weights, out=scratch, casting="same_kind")
                target += scratch
                self._weight_sum[vol] += weights

    def add_constant(self, values: Sequence[float], locations: IntArray) -> None:
        """Accumulate patches whose output is ``values[k]`` at every voxel (e.g. certain background)."""
        if len(values) != self.num_channels:
            raise ConfigError(f"{len(values)} constant values for {self.num_channels} channels")
        for start in locations:
            vol, pat, _ = patch_window(start, self.sampler.patch_size, self.sampler.volume_shape)
            weights = 1.0 if self._uniform else self.weights[pat]
            for k, value in enumerate(values):
                if value != 0:
                    self._sum[(k, *vol)] += weights if value == 1 else np.float32(value) * weights
            self._weight_sum[vol] += weights

    def result(self) -> FloatArray:
        """The weighted average ``float32[K, X, Y, Z]``; ValueError if some voxel got no patch."""
        if self._weight_sum.min() <= 0:
            raise ValueError(f"{int(np.count_nonzero(self._weight_sum <= 0))} voxels are covered by no added "
                             "patch; add every location of the sampler")
        out = np.empty(self._sum.shape, dtype=np.float32)
        np.divide(self._sum, self._weight_sum, out=out, casting="same_kind")
        return out
