"""Class-aware patch sampling: a fraction of each epoch's patches centred on a voxel of chosen classes.

nnU-Net's "foreground oversampling" (a third of its patches contain foreground by construction) for the
``PatchSampler``: in every epoch ``n = round(fraction * M)`` of its ``M`` patches, at positions drawn
without replacement, are replaced; each replacement picks a class uniformly among ``classes`` that occur in
the training labels, then a voxel uniformly among all voxels of that class (all subjects together), and
centres the patch on it (the start clipped so the patch stays inside the volume, as the ``random`` mode).
Rare classes (CSF) therefore get as many centred patches as common ones.

Memory: the flat index of every voxel of the chosen classes, 4 bytes each (8 for volumes over 2**31 voxels;
IBSR's ~1.5 M labelled voxels per subject give ~6 MB per subject).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.errors import ConfigError, DataError
from bench.types import Shape3

CLASS_STREAM = 2
"""Third word of the class-centred generator's seed (``[seed, epoch, CLASS_STREAM]``)."""
StartForCentre = Callable[[int, Shape3], Shape3]
"""``start(subject, centre)``: the patch start that centres a patch on ``centre`` in that subject."""


@dataclass(frozen=True)
class ClassCentres:
    """Voxels of each chosen class over all subjects, and the fraction of patches centred on them.

    Attributes:
        fraction: Share of every epoch's patches that are replaced, in (0, 1].
        classes: The classes that occur in the labels (those asked for that do not are left out).
        voxels: Per class, the flat voxel indices of all subjects, subject after subject.
        ends: Per class, the cumulative voxel count at the end of each subject (``int64[S]``).
        shapes: Each subject's label shape.
    """

    fraction: float
    classes: tuple[int, ...]
    voxels: tuple[np.ndarray, ...]
    ends: tuple[npt.NDArray[np.int64], ...]
    shapes: tuple[Shape3, ...]

    @classmethod
    def build(cls, labels: Sequence[np.ndarray], classes: Sequence[int], fraction: float) -> ClassCentres | None:
        """The centres of ``classes`` in ``labels``; ``None`` when ``fraction`` is 0.

        Raises:
            ConfigError: ``fraction`` outside [0, 1] or no class given.
            DataError: None of ``classes`` occurs in any label.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"sampling.class_fraction={fraction!r} must be in [0, 1]", fix="0 switches it off")
        if fraction == 0.0:
            return None
        wanted = tuple(int(c) for c in classes)
        if not wanted:
            raise ConfigError("sampling.class_centres is empty", fix="name the classes, e.g. [1, 2, 3]")
        small = max(label.size for label in labels) < 2**31
        found: list[int] = []
        voxels: list[np.ndarray] = []
        ends: list[npt.NDArray[np.int64]] = []
        for c in wanted:
            per_subject = [np.flatnonzero(label == c).astype(np.int32 if small else np.int64) for label in labels]
            if not any(len(v) for v in per_subject):
                continue
            found.append(c)
            voxels.append(np.concatenate(per_subject))
            ends.append(np.cumsum([len(v) for v in per_subject], dtype=np.int64))
        if not found:
            raise DataError(f"sampling.class_centres={list(wanted)}: none of these classes occurs in the training labels")
        shapes = tuple((int(a), int(b), int(d)) for a, b, d in (label.shape for label in labels))
        return cls(float(fraction), tuple(found), tuple(voxels), tuple(ends), shapes)

    def replace(self, locations: npt.NDArray[np.int32], rng: np.random.Generator,
                start_for_centre: StartForCentre) -> npt.NDArray[np.int32]:
        """``locations`` (``(subject, x0, y0, z0)`` rows) with ``round(fraction * M)`` rows re-centred on class voxels."""
        out = locations.copy()
        count = round(self.fraction * len(out))
        positions = rng.permutation(len(out))[:count]
        chosen = rng.integers(len(self.classes), size=count)
        for position, k in zip(positions.tolist(), chosen.tolist(), strict=True):
            rank = int(rng.integers(len(self.voxels[k])))
            subject, flat = int(np.searchsorted(self.ends[k], rank, side="right")), int(self.voxels[k][rank])
            x, y, z = np.unravel_index(flat, self.shapes[subject])
            out[position] = (subject, *start_for_centre(subject, (int(x), int(y), int(z))))
        return out
