"""Patches: the training ``PatchSampler`` and the inference ``GridSampler`` / ``GridAggregator``.

numpy only. Volumes are indexed ``[x, y, z]``; images may carry a leading channel axis ``[C, X, Y, Z]``.

A patch is named by its start corner ``(x0, y0, z0)`` in volume coordinates; it covers
``[x0, x0 + px) × [y0, y0 + py) × [z0, z0 + pz)``. Along an axis where the volume is smaller than the patch,
the volume is padded symmetrically, MONAI-style: ``(p - n) // 2`` voxels before and the rest after, so the
start is ``-((p - n) // 2)``. Padding is never materialised: voxels of a patch that fall outside the volume
are filled with the pad value at extraction time (images: the subject's per-channel minimum, the
background of a preprocessed image; labels: 0).

Training (``PatchSampler``) stores only an ``int32[N, 4]`` index of ``(subject, x0, y0, z0)`` rows and
keeps references to the subjects' arrays; every batch is cut on demand into freshly allocated arrays.
Inference tiles a volume with a ``GridSampler`` and blends patch outputs with a ``GridAggregator``, whose
start positions and Gaussian importance map match MONAI's ``sliding_window_inference``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.contract import PatchBatch
from bench.errors import ConfigError, DataError
from bench.types import FloatArray, Shape3

SamplingMode = Literal["grid", "random_subset", "random"]
Blending = Literal["mean", "gaussian"]
IntArray = npt.NDArray[np.integer]
Slices = tuple[slice, slice, slice]

SAMPLING_MODES: tuple[str, ...] = ("grid", "random_subset", "random")
BLENDINGS: tuple[str, ...] = ("mean", "gaussian")


# ---------------------------------------------------------------------------------------------- helpers


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


# ---------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class PatchSubject:
    """One preprocessed training subject, held by reference (never copied).

    Attributes:
        image: ``float32[C, X, Y, Z]`` or ``float32[X, Y, Z]`` intensities.
        label: Integer ``[X, Y, Z]`` class map.
        mask: ``bool[X, Y, Z]`` brain mask; patch centres are taken inside it.
        id: Name used in error messages.
    """

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray
    id: str = ""

    def __post_init__(self) -> None:
        name = self.id or "<unnamed>"
        if self.image.ndim not in (3, 4):
            raise DataError(f"subject {name}: image has shape {self.image.shape}, expected [X,Y,Z] or [C,X,Y,Z]")
        if not np.issubdtype(self.image.dtype, np.floating):
            raise DataError(f"subject {name}: image dtype {self.image.dtype} is not floating point",
                            fix="pass the preprocessed float32 image")
        for part, array in (("label", self.label), ("mask", self.mask)):
            if array.shape != self.shape:
                raise DataError(f"subject {name}: {part} shape {array.shape} differs from image shape {self.shape}")
        if not np.issubdtype(self.label.dtype, np.integer):
            raise DataError(f"subject {name}: label dtype {self.label.dtype} is not integer")
        if self.mask.dtype != np.bool_:
            raise DataError(f"subject {name}: mask dtype {self.mask.dtype} is not bool", fix="pass mask.astype(bool)")

    @property
    def shape(self) -> Shape3:
        """Spatial shape ``(X, Y, Z)``."""
        x, y, z = self.image.shape[-3:]
        return (int(x), int(y), int(z))

    @property
    def channels(self) -> np.ndarray:
        """The image as ``[C, X, Y, Z]`` (a view when the image is 3D)."""
        return self.image[None] if self.image.ndim == 3 else self.image


class PatchSampler:
    """Seeded patch batches from in-memory subjects (implements ``bench.contract.PatchSource``).

    Modes:
        ``grid``: every grid patch (starts ``0, step, 2·step, …`` per axis while the patch fits, no extra
        end-aligned start) whose centre voxel ``start + patch // 2`` lies in the brain mask; shuffled each
        epoch unless ``shuffle=False`` (then in (subject, x, y, z) order: a validation source).
        ``random_subset``: ``patches_per_epoch`` patches drawn without replacement from the grid list
        (NeuroNet's strategy).
        ``random``: ``patches_per_epoch`` patches whose centres are drawn uniformly from all brain-mask
        voxels of all subjects, the start clipped so the patch stays inside the volume.

    Class oversampling (``oversample=True``): a grid candidate with at least ``oversample_min_voxels``
    voxels of ``oversample_class`` (counted inside the volume) appears ``oversample_factor`` times in the
    grid epoch list. ``random_subset`` draws without replacement from that expanded list (so such a
    patch is ``factor`` times as likely and may come up to ``factor`` times). ``random`` weights the draw
    the same way by rejection: a drawn patch without the class is kept with probability ``1 / factor``,
    so each centre's probability is proportional to ``factor`` (with the class) or 1 (without).

    Every epoch's list is drawn from ``numpy.random.default_rng([seed, epoch])``: the same batches for
    the same (seed, epoch), whoever consumes them. ``shuffle`` only affects ``grid`` mode.

    Args:
        subjects: The training subjects (held by reference).
        patch_size: One int (cubic) or three.
        step: Grid step per axis; default ``patch_size // 2`` (at least 1).
        batch_size: Patches per batch.
        seed: Non-negative seed.
        mode: ``grid``, ``random_subset`` or ``random``.
        patches_per_epoch: Patches per epoch for the two random modes.
        shuffle: Shuffle the grid list each epoch.
        drop_last: Drop the last partial batch instead of yielding it.
        oversample, oversample_class, oversample_factor, oversample_min_voxels: Class oversampling.
        allow_padding: Allow volumes smaller than the patch (padded at extraction); ConfigError if not.
    """

    def __init__(
        self,
        subjects: Sequence[PatchSubject],
        patch_size: int | Sequence[int],
        *,
        step: int | Sequence[int] | None = None,
        batch_size: int = 8,
        seed: int = 0,
        mode: SamplingMode = "grid",
        patches_per_epoch: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        oversample: bool = False,
        oversample_class: int = 1,
        oversample_factor: int = 3,
        oversample_min_voxels: int = 1,
        allow_padding: bool = True,
    ) -> None:
        self.patch_size: Shape3 = as_shape3(patch_size, "patch_size")
        self.step: Shape3 = (as_shape3(step, "step") if step is not None
                             else (max(self.patch_size[0] // 2, 1), max(self.patch_size[1] // 2, 1),
                                   max(self.patch_size[2] // 2, 1)))
        _check_settings(batch_size, seed, mode, patches_per_epoch, oversample_factor, oversample_min_voxels)
        self.batch_size = batch_size
        self.seed = seed
        self.mode: SamplingMode = mode
        self.patches_per_epoch = patches_per_epoch
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.oversample_class = oversample_class
        self.oversample_factor = oversample_factor if oversample else 1
        self.oversample_min_voxels = oversample_min_voxels
        self.subjects: tuple[PatchSubject, ...] = tuple(subjects)
        self._check_subjects(allow_padding)
        self._images = [s.channels for s in self.subjects]
        self._pad_values = [channel_minimum(img) if any(n < p for n, p in zip(s.shape, self.patch_size, strict=True))
                            else None for s, img in zip(self.subjects, self._images, strict=True)]
        self.index, self.oversampled = self._grid_candidates() if mode != "random" else _empty_index()
        self._mask_cumsum = self._mask_counts() if mode == "random" else []
        self._check_epoch_size()

    # -- construction ---------------------------------------------------------------------------------

    def _check_subjects(self, allow_padding: bool) -> None:
        if not self.subjects:
            raise DataError("PatchSampler got no subjects", fix="pass at least one training subject")
        channels = {s.channels.shape[0] for s in self.subjects}
        if len(channels) > 1:
            raise DataError(f"subjects have different channel counts {sorted(channels)}")
        for i, s in enumerate(self.subjects):
            name = s.id or f"#{i}"
            if not s.mask.any():
                raise DataError(f"subject {name}: the brain mask is empty", fix="check the mask/preprocessing")
            if not allow_padding and any(n < p for n, p in zip(s.shape, self.patch_size, strict=True)):
                raise ConfigError(f"patch {self.patch_size} larger than the preprocessed volume {s.shape} "
                                  f"of subject {name}", fix="use a smaller patch_size or allow_padding=True")

    def _grid_candidates(self) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
        rows: list[np.ndarray] = []
        flags: list[np.ndarray] = []
        for i, s in enumerate(self.subjects):
            starts = [axis_starts(n, p, st, end_aligned=False)
                      for n, p, st in zip(s.shape, self.patch_size, self.step, strict=True)]
            centres = [np.clip(st + p // 2, 0, n - 1) for st, p, n in zip(starts, self.patch_size, s.shape, strict=True)]
            grid = np.nonzero(s.mask[np.ix_(*centres)])
            block = np.empty((len(grid[0]), 4), dtype=np.int32)
            block[:, 0] = i
            for axis in range(3):
                block[:, axis + 1] = starts[axis][grid[axis]]
            rows.append(block)
            if self.oversample_factor > 1:
                counts = class_counts_on_grid(s.label, self.oversample_class, starts, self.patch_size)
                flags.append(counts[grid] >= self.oversample_min_voxels)
            else:
                flags.append(np.zeros(len(block), dtype=bool))
        index = np.concatenate(rows)
        if len(index) == 0:
            raise DataError(f"no grid patch centre (patch {self.patch_size}, step {self.step}) lies in any brain mask",
                            fix="use a smaller step or mode='random'")
        return index, np.concatenate(flags)

    def _mask_counts(self) -> list[IntArray]:
        """Per subject, the cumulative count of mask voxels over x-slices (for uniform centre draws)."""
        return [np.cumsum(s.mask.sum(axis=(1, 2), dtype=np.int64)) for s in self.subjects]

    def _check_epoch_size(self) -> None:
        if self.mode == "random_subset":
            available = len(self._grid_rows())
            if self.patches_per_epoch is not None and self.patches_per_epoch > available:
                raise ConfigError(f"patches_per_epoch={self.patches_per_epoch} exceeds the {available} grid "
                                  f"patches available", fix="lower patches_per_epoch or use mode='random'")
        if self.drop_last and self.epoch_size < self.batch_size:
            raise ConfigError(f"drop_last=True with batch_size={self.batch_size} > the {self.epoch_size} "
                              "patches of an epoch yields no batch", fix="lower batch_size or drop_last=False")

    # -- epochs ---------------------------------------------------------------------------------------

    @property
    def num_candidates(self) -> int:
        """Grid candidates (patch centres in the mask); 0 in ``random`` mode."""
        return len(self.index)

    @property
    def epoch_size(self) -> int:
        """Patches per epoch."""
        if self.mode == "grid":
            return self.num_candidates + (self.oversample_factor - 1) * int(self.oversampled.sum())
        assert self.patches_per_epoch is not None
        return self.patches_per_epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.epoch_size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _grid_rows(self) -> IntArray:
        """Row numbers of ``index`` in an epoch's grid list, oversampled rows repeated, sorted."""
        rows = np.arange(self.num_candidates, dtype=np.int64)
        if self.oversample_factor > 1:
            extra = np.repeat(np.flatnonzero(self.oversampled), self.oversample_factor - 1)
            rows = np.sort(np.concatenate([rows, extra]), kind="stable")
        return rows

    def epoch_locations(self, epoch: int) -> npt.NDArray[np.int32]:
        """The epoch's patches in order, as ``int32[M, 4]`` rows ``(subject, x0, y0, z0)``."""
        if epoch < 0:
            raise ConfigError(f"epoch={epoch} must be >= 0")
        rng = np.random.default_rng([self.seed, epoch])
        if self.mode == "random":
            assert self.patches_per_epoch is not None
            return self._random_locations(rng, self.patches_per_epoch)
        rows = self._grid_rows()
        if self.mode == "random_subset":
            rows = rng.permutation(rows)[: self.patches_per_epoch]
        elif self.shuffle:
            rows = rng.permutation(rows)
        return self.index[rows]

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        """Yield the epoch's batches (the last partial one unless ``drop_last``)."""
        locations = self.epoch_locations(epoch)
        for b in range(len(self)):
            yield self.extract(locations[b * self.batch_size: (b + 1) * self.batch_size])

    def extract(self, locations: IntArray) -> PatchBatch:
        """Cut the patches named by ``(subject, x0, y0, z0)`` rows into a new batch."""
        image = np.empty((len(locations), self._images[0].shape[0], *self.patch_size), dtype=np.float32)
        label = np.empty((len(locations), *self.patch_size), dtype=np.int64)
        for i, (s, x0, y0, z0) in enumerate(locations.tolist()):
            vol, pat, inside = patch_window((x0, y0, z0), self.patch_size, self.subjects[s].shape)
            if inside:
                image[i] = self._images[s][(slice(None), *vol)]
                label[i] = self.subjects[s].label[vol]
                continue
            image[i] = self._pad_values[s]
            image[(i, slice(None), *pat)] = self._images[s][(slice(None), *vol)]
            label[i] = 0
            label[(i, *pat)] = self.subjects[s].label[vol]
        return PatchBatch(image=image, label=label)

    # -- random mode ----------------------------------------------------------------------------------

    def _random_locations(self, rng: np.random.Generator, count: int) -> npt.NDArray[np.int32]:
        totals = np.cumsum([int(c[-1]) for c in self._mask_cumsum])
        out = np.empty((count, 4), dtype=np.int32)
        n = 0
        while n < count:
            rank = int(rng.integers(int(totals[-1])))
            keep_anyway = rng.random() < 1.0 / self.oversample_factor
            s = int(np.searchsorted(totals, rank, side="right"))
            rank -= int(totals[s - 1]) if s else 0
            start = self._start_for_centre(s, self._mask_voxel(s, rank))
            if self.oversample_factor > 1 and not keep_anyway and not self._has_class(s, start):
                continue
            out[n] = (s, *start)
            n += 1
        return out

    def _mask_voxel(self, s: int, rank: int) -> Shape3:
        """The ``rank``-th mask voxel of subject ``s`` in C order."""
        cumsum = self._mask_cumsum[s]
        x = int(np.searchsorted(cumsum, rank, side="right"))
        rank -= int(cumsum[x - 1]) if x else 0
        y, z = divmod(int(np.flatnonzero(self.subjects[s].mask[x])[rank]), self.subjects[s].shape[2])
        return (x, y, z)

    def _start_for_centre(self, s: int, centre: Shape3) -> Shape3:
        start = [int(axis_starts(n, p, 1, end_aligned=False)[0]) if n <= p else min(max(c - p // 2, 0), n - p)
                 for c, p, n in zip(centre, self.patch_size, self.subjects[s].shape, strict=True)]
        return (start[0], start[1], start[2])

    def _has_class(self, s: int, start: Shape3) -> bool:
        vol, _, _ = patch_window(start, self.patch_size, self.subjects[s].shape)
        count = np.count_nonzero(self.subjects[s].label[vol] == self.oversample_class)
        return bool(count >= self.oversample_min_voxels)


def _check_settings(batch_size: int, seed: int, mode: str, patches_per_epoch: int | None,
                    oversample_factor: int, oversample_min_voxels: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"sampling mode={mode!r} is unknown", fix=f"use one of {', '.join(SAMPLING_MODES)}")
    if mode != "grid" and (patches_per_epoch is None or patches_per_epoch < 1):
        raise ConfigError(f"patches_per_epoch={patches_per_epoch!r} must be >= 1 for mode={mode!r}")
    if not isinstance(oversample_factor, int) or oversample_factor < 1:
        raise ConfigError(f"oversample_factor={oversample_factor!r} must be an integer >= 1")
    if oversample_min_voxels < 1:
        raise ConfigError(f"oversample_min_voxels={oversample_min_voxels!r} must be >= 1")


def _empty_index() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    return np.empty((0, 4), dtype=np.int32), np.empty(0, dtype=bool)


def class_counts_on_grid(label: np.ndarray, cls: int, starts: Sequence[IntArray], patch: Shape3) -> IntArray:
    """Voxels of class ``cls`` inside each grid patch, as ``int64[nx, ny, nz]``.

    One x-slab at a time: the slab's per-(y, z) counts go through a 2D summed-area table, so memory stays
    at one slab (never a full-volume temporary).
    """
    shape = label.shape
    ylo, yhi = np.clip(starts[1], 0, shape[1]), np.clip(starts[1] + patch[1], 0, shape[1])
    zlo, zhi = np.clip(starts[2], 0, shape[2]), np.clip(starts[2] + patch[2], 0, shape[2])
    table = np.zeros((shape[1] + 1, shape[2] + 1), dtype=np.int64)
    out = np.empty((len(starts[0]), len(ylo), len(zlo)), dtype=np.int64)
    for i, x0 in enumerate(starts[0].tolist()):
        plane = (label[max(x0, 0): max(x0 + patch[0], 0)] == cls).sum(axis=0, dtype=np.int64)
        np.cumsum(np.cumsum(plane, axis=0), axis=1, out=table[1:, 1:])
        out[i] = (table[np.ix_(yhi, zhi)] - table[np.ix_(ylo, zhi)]
                  - table[np.ix_(yhi, zlo)] + table[np.ix_(ylo, zlo)])
    return out


# ---------------------------------------------------------------------------------------------- inference


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
