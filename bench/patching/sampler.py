"""The training ``PatchSampler``: seeded batches of patches from in-memory subjects.

numpy only; patch coordinates and padding follow ``bench.patching.windows``. ``PatchSampler`` stores only
an ``int32[N, 4]`` index of ``(subject, x0, y0, z0)`` rows and keeps references to the subjects' arrays;
every batch is cut on demand into freshly allocated arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bench.contract import PatchBatch
from bench.data.labels import IBSR_LABELS
from bench.errors import ConfigError, DataError
from bench.patching.augment import AUGMENT_STREAM, AugmentSpec, augment_batch
from bench.patching.centres import CLASS_STREAM, ClassCentres
from bench.patching.windows import IntArray, as_shape3, axis_starts, channel_minimum, patch_window
from bench.types import Shape3

SamplingMode = Literal["grid", "random_subset", "random"]

SAMPLING_MODES: tuple[str, ...] = ("grid", "random_subset", "random")


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
    the same (seed, epoch), whoever consumes them. ``shuffle`` only affects ``grid`` mode. ``augment``
    (``bench.patching.augment``) transforms each batch with draws from ``default_rng([seed, epoch, 1])``:
    the same locations as without it, and the same augmented batches for the same (seed, epoch).

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
        augment: Data augmentation of every batch (``None`` or a spec with every probability 0: none).
        class_fraction, class_centres: Class-aware sampling (nnU-Net's foreground oversampling): in every
            epoch ``round(class_fraction * epoch_size)`` patches, at positions drawn from
            ``default_rng([seed, epoch, 2])``, are replaced by patches centred on a voxel of one of
            ``class_centres`` (``bench.patching.centres``); the other patches stay where they were.
        class_names: The name of each class index of the labels (validation Dice is reported by name).
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
        augment: AugmentSpec | None = None,
        class_fraction: float = 0.0,
        class_centres: Sequence[int] = (1, 2, 3),
        class_names: Sequence[str] = IBSR_LABELS.names,
    ) -> None:
        self.patch_size: Shape3 = as_shape3(patch_size, "patch_size")
        self.step: Shape3 = (as_shape3(step, "step") if step is not None
                             else (max(self.patch_size[0] // 2, 1), max(self.patch_size[1] // 2, 1),
                                   max(self.patch_size[2] // 2, 1)))
        _check_settings(batch_size, seed, mode, patches_per_epoch, oversample_factor, oversample_min_voxels)
        self.batch_size = batch_size
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.seed = seed
        self.mode: SamplingMode = mode
        self.patches_per_epoch = patches_per_epoch
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.oversample_class = oversample_class
        self.oversample_factor = oversample_factor if oversample else 1
        self.oversample_min_voxels = oversample_min_voxels
        self.augment = augment if augment is not None and augment.enabled else None
        self.subjects: tuple[PatchSubject, ...] = tuple(subjects)
        self._check_subjects(allow_padding)
        self._images = [s.channels for s in self.subjects]
        self._pad_values = [channel_minimum(img) if any(n < p for n, p in zip(s.shape, self.patch_size, strict=True))
                            else None for s, img in zip(self.subjects, self._images, strict=True)]
        self.centres = ClassCentres.build([s.label for s in self.subjects], class_centres, class_fraction)
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
            locations = self._random_locations(rng, self.patches_per_epoch)
        else:
            rows = self._grid_rows()
            if self.mode == "random_subset":
                rows = rng.permutation(rows)[: self.patches_per_epoch]
            elif self.shuffle:
                rows = rng.permutation(rows)
            locations = self.index[rows]
        if self.centres is None:
            return locations
        return self.centres.replace(locations, np.random.default_rng([self.seed, epoch, CLASS_STREAM]),
                                    lambda s, centre: self._start_for_centre(s, centre))

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        """Yield the epoch's batches (the last partial one unless ``drop_last``)."""
        locations = self.epoch_locations(epoch)
        rng = np.random.default_rng([self.seed, epoch, AUGMENT_STREAM]) if self.augment is not None else None
        for b in range(len(self)):
            batch = self.extract(locations[b * self.batch_size: (b + 1) * self.batch_size])
            yield batch if rng is None or self.augment is None else augment_batch(batch, self.augment, rng)

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



PatchRegion = Literal["centre_in_brain", "overlaps_brain"]


def patch_centre_region(mask: np.ndarray, patch_size: Sequence[int], region: PatchRegion) -> np.ndarray:
    """Where a training patch's centre may lie, as a ``bool[X, Y, Z]`` mask.

    ``centre_in_brain``: the brain mask itself. ``overlaps_brain``: every centre whose patch (start
    ``centre - patch // 2``, as the sampler places it) contains at least one brain voxel, i.e. the mask
    dilated by the patch box. That is the set of patches sliding-window inference predicts (it skips only
    patches entirely outside the brain), so training then also sees the brain's edge with as much background
    as inference gives it; with per-patch normalisation (instance norm) the edge patches otherwise meet
    statistics never seen in training.
    """
    if region == "centre_in_brain":
        return mask
    if region != "overlaps_brain":
        raise ConfigError(f"sampling.region={region!r} is unknown", fix="use centre_in_brain or overlaps_brain")
    from scipy.ndimage import maximum_filter

    size = as_shape3(patch_size, "patch_size")
    return np.asarray(maximum_filter(mask.astype(np.uint8), size=size, mode="constant", cval=0), dtype=bool)
