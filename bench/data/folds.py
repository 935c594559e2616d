"""k-fold cross-validation over a dataset's labelled subjects, stratified by voxel spacing.

For a user without a separate test set: with ``folds`` folds every labelled subject is tested exactly once
over ``fold = 0 .. folds-1``, so rows can be compared on every subject. Folds are made once per
``seed`` (independent of the run's seed, so ``seed=0,1,2 data.fold=0,...,4`` trains every seed on the
same partition): the subjects of each voxel spacing (IBSR18's three, or read from the image headers) are
shuffled and dealt to the folds in turn, so each fold holds about the same mix of spacings, as the
``holdout`` split does. Fold ``fold`` is the test set; with three folds or more the next fold
(``fold + 1`` mod ``folds``) validates (early stopping, plateau), the rest train. Unlabelled subjects
are not used.

Example:
    >>> assignment = fold_split(discover("data/ibsr18"), FoldSplit(folds=5, fold=0))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.discovery import IBSR18, Discovery, SubjectFiles
from bench.errors import ConfigError


@dataclass(frozen=True)
class FoldSplit:
    """Fold ``fold`` of ``folds`` (stratified by spacing, shuffled with ``seed``) is the test set."""

    folds: int = 5
    fold: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("folds", 2), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"data.{'fold_seed' if name == 'seed' else name}={value!r} must be an "
                                  f"integer >= {minimum}")
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.folds:
            raise ConfigError(f"data.fold={self.fold!r} is out of range for data.folds={self.folds}",
                              fix=f"use a fold from 0 to {self.folds - 1}")

    @property
    def name(self) -> str:
        """How the split is named in records: ``fold2of5-seed0``."""
        return f"fold{self.fold}of{self.folds}-seed{self.seed}"


def spacing_of(subject: SubjectFiles) -> tuple[float, float, float]:
    """Voxel size in mm: IBSR18's table for its ids, else the image header (rounded to 0.001 mm)."""
    if subject.id in IBSR18:
        return IBSR18[subject.id].spacing_mm
    import nibabel as nib

    zooms = nib.load(str(subject.image_path)).header.get_zooms()[:3]  # type: ignore[attr-defined]
    return (round(float(zooms[0]), 3), round(float(zooms[1]), 3), round(float(zooms[2]), 3))


def fold_of_subject(found: Discovery, split: FoldSplit) -> dict[str, int]:
    """Labelled subject id -> its fold (``0 .. folds-1``)."""
    labelled = sorted((s for s in found.subjects if s.label_path is not None), key=lambda s: s.id)
    if len(labelled) < split.folds:
        raise ConfigError(
            f"data.folds={split.folds} needs at least {split.folds} labelled subjects; {found.root} has "
            f"{len(labelled)}", fix="use fewer folds",
        )
    groups: dict[tuple[float, float, float], list[str]] = {}
    for subject in labelled:
        groups.setdefault(spacing_of(subject), []).append(subject.id)
    rng = np.random.default_rng(split.seed)
    order = [subject_id for spacing in sorted(groups) for subject_id in rng.permutation(groups[spacing])]
    return {str(subject_id): index % split.folds for index, subject_id in enumerate(order)}


def fold_split(found: Discovery, split: FoldSplit) -> dict[str, str]:
    """Subject id -> ``train``/``val``/``test`` for this fold (see the module docstring)."""
    folds = fold_of_subject(found, split)
    val_fold = (split.fold + 1) % split.folds if split.folds >= 3 else None
    out = {}
    for subject_id, fold in folds.items():
        out[subject_id] = "test" if fold == split.fold else "val" if fold == val_fold else "train"
    if "train" not in out.values():
        raise ConfigError(
            f"data.folds={split.folds} leaves no training subject among {len(folds)} labelled subjects "
            "(one fold tests, one validates)", fix="use fewer folds",
        )
    order = [s.id for s in found.subjects]
    return dict(sorted(out.items(), key=lambda item: order.index(item[0])))
