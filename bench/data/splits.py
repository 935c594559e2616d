"""Named and explicit splits: which subjects of a :class:`~bench.data.discovery.Discovery` train,
validate, test or are only predicted.

Named splits (see :data:`NAMED_SPLITS`) turn the subjects into ``train``/``val``/``test``/``predict``
sets; an explicit :class:`SplitSpec` lists the ids of each set instead, and a
:class:`~bench.data.folds.FoldSplit` picks one fold of a k-fold cross-validation. Named splits are IBSR18's:
an nnU-Net root is split by folds (its ``splits_final.json`` when present) or explicit lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.data.discovery import COURSE_FOLDERS, IBSR18, Discovery
from bench.data.folds import FoldSplit, fold_split
from bench.errors import ConfigError, DataError

SPLITS = ("train", "val", "test", "predict")
"""``predict`` holds unlabelled subjects that are predicted but never scored."""

NAMED_SPLITS = ("course", "paper", "holdout")


@dataclass(frozen=True)
class SplitSpec:
    """An explicit split: the subject ids of each set (subjects in no list are not loaded).

    Lists are accepted and stored as tuples.
    """

    train: Sequence[str] = ()
    val: Sequence[str] = ()
    test: Sequence[str] = ()
    predict: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in SPLITS:
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"split {name!r} must be a list of ids, got the string {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))

    def assignment(self) -> dict[str, str]:
        """Subject id -> split name; an id listed twice is a ``ConfigError``."""
        out: dict[str, str] = {}
        for name in SPLITS:
            for subject_id in getattr(self, name):
                if subject_id in out:
                    raise ConfigError(
                        f"subject {subject_id!r} is listed in both {out[subject_id]!r} and {name!r}",
                        fix="put each id in one split only",
                    )
                out[subject_id] = name
        return out


PAPER_VAL = ("IBSR_07", "IBSR_16")
HOLDOUT_VAL = ("IBSR_05", "IBSR_07")
HOLDOUT_TEST = ("IBSR_04", "IBSR_09", "IBSR_18")


def _folders(found: Discovery, split_name: str) -> dict[str, str]:
    """Subject id -> course folder: from disk (course layout) or from the IBSR18 table (flat layout)."""
    if found.layout == "course":
        return {s.id: str(s.folder) for s in found.subjects}
    unknown = [s.id for s in found.subjects if s.id not in IBSR18]
    if unknown:
        raise DataError(
            f"split {split_name!r} on a flat layout assigns subjects by their IBSR id, but these ids are not "
            f"IBSR18 ids: {', '.join(unknown)}",
            path=found.root,
            fix="use the course layout, or an explicit split (SplitSpec)",
        )
    return {s.id: IBSR18[s.id].folder for s in found.subjects}


def _require_ids(found: Discovery, split_name: str, ids: Iterable[str]) -> None:
    missing = [i for i in ids if i not in found.by_id()]
    if missing:
        raise DataError(
            f"split {split_name!r} needs subjects that are not in this dataset: {', '.join(missing)} "
            f"(found: {', '.join(found.by_id())})",
            path=found.root,
            fix="choose another split (course, paper, holdout) or an explicit one",
        )


def course_split(found: Discovery) -> dict[str, str]:
    """The course's own split: Training_Set -> train, Validation_Set -> test, Test_Set -> predict."""
    if found.layout != "course":
        raise DataError(
            "split 'course' needs the course folders Training_Set/Validation_Set/Test_Set; this root has the "
            "flat layout",
            path=found.root,
            fix="use --split paper or holdout (IBSR ids), or an explicit split",
        )
    return {s.id: COURSE_FOLDERS[str(s.folder)] for s in found.subjects}


def paper_split(found: Discovery) -> dict[str, str]:
    """The paper's split: IBSR_07 and IBSR_16 validate, the rest of Training_Set trains,
    Validation_Set is the test set and Test_Set is predicted."""
    _require_ids(found, "paper", PAPER_VAL)
    out = {}
    for subject_id, folder in _folders(found, "paper").items():
        out[subject_id] = "val" if subject_id in PAPER_VAL else COURSE_FOLDERS[folder]
    return out


def holdout_split(found: Discovery) -> dict[str, str]:
    """A hold-out inside Training_Set, for copies of IBSR18 without the Validation_Set folder.

    Our local IBSR18 copy has only Training_Set (10 labelled) and Test_Set (3 unlabelled), so the
    ``paper`` split would have no test subjects. ``holdout`` keeps one or two subjects of each of the three
    IBSR spacings out of training: val = IBSR_05, IBSR_07; test = IBSR_04, IBSR_09, IBSR_18; train = the
    rest of Training_Set; predict = Test_Set. Validation_Set subjects, if present, are not used.
    """
    _require_ids(found, "holdout", HOLDOUT_VAL + HOLDOUT_TEST)
    out = {}
    for subject_id, folder in _folders(found, "holdout").items():
        if subject_id in HOLDOUT_VAL:
            out[subject_id] = "val"
        elif subject_id in HOLDOUT_TEST:
            out[subject_id] = "test"
        elif folder == "Training_Set":
            out[subject_id] = "train"
        elif folder == "Test_Set":
            out[subject_id] = "predict"
    return out


def explicit_split(found: Discovery, spec: SplitSpec) -> dict[str, str]:
    """Assign the ids listed in ``spec``; unknown ids are a ``DataError`` listing the available ones."""
    assignment = spec.assignment()
    available = found.by_id()
    unknown = [i for i in assignment if i not in available]
    if unknown:
        raise DataError(
            f"explicit split lists unknown subject ids: {', '.join(unknown)} (available: "
            f"{', '.join(available)})",
            path=found.root,
            fix="fix the ids in the split",
        )
    order = list(available)
    return dict(sorted(assignment.items(), key=lambda item: order.index(item[0])))


def assign_split(found: Discovery, split: str | SplitSpec | FoldSplit) -> dict[str, str]:
    """Subject id -> split (``train``/``val``/``test``/``predict``) for a named, explicit or k-fold split."""
    if isinstance(split, SplitSpec):
        return explicit_split(found, split)
    if isinstance(split, FoldSplit):
        return fold_split(found, split)
    named = {"course": course_split, "paper": paper_split, "holdout": holdout_split}
    if split not in named:
        raise ConfigError(f"unknown split {split!r}", fix=f"use one of {', '.join(NAMED_SPLITS)} or a SplitSpec")
    if found.layout == "nnunet":
        raise ConfigError(
            f"split {split!r} is one of IBSR18's named splits; {found.root} is an nnU-Net dataset",
            fix="use data.fold=K: k folds over imagesTr, or its splits_final.json; bench data: --fold K; or explicit "
            "lists data.split={train:[...],val:[...],test:[...]}",
        )
    return named[split](found)
