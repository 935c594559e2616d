"""Dataset discovery: which subjects sit under a dataset root, and where IBSR18's subjects belong.

Three layouts are recognised under a dataset root (``.nii.gz`` or ``.nii`` files):

* course layout: ``root/{Training_Set,Validation_Set,Test_Set}/<id>/<id>.nii.gz`` (+ ``<id>_seg.nii.gz``
  when labelled). The folder gives the course split: ``Training_Set`` -> ``train``,
  ``Validation_Set`` -> ``test`` (the course's labelled hold-out), ``Test_Set`` -> ``predict``.
* flat layout: ``root/<id>/<id>.nii.gz`` (+ ``<id>_seg.nii.gz``); no folder split.
* nnunet layout: a root holding ``dataset.json`` (an nnU-Net v2 raw dataset or a Medical Segmentation
  Decathlon folder), read by ``bench.data.nnunet``; its labels and input channels come from dataset.json.

:func:`discover` only finds the files (a :class:`Discovery`); ``bench.data.splits`` assigns them to sets
and ``bench.data.cohort`` reads and checks them. Problems raise a :class:`~bench.errors.DataError` that
names the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.data.labels import IBSR_LABELS, LabelSet
from bench.errors import DataError
from bench.types import Spacing

COURSE_FOLDERS: Mapping[str, str] = {
    "Training_Set": "train",
    "Validation_Set": "test",
    "Test_Set": "predict",
}
"""Course folder -> its split under the ``course`` split (Validation_Set is the labelled hold-out)."""

IBSR_SPACINGS_MM: tuple[Spacing, ...] = (
    (0.9375, 1.5, 0.9375),
    (1.0, 1.5, 1.0),
    (0.8370536, 1.5, 0.8370536),
)
"""The three voxel sizes of IBSR18 (axis 1 is the 1.5 mm coronal slice axis)."""


@dataclass(frozen=True)
class IbsrSubject:
    """Where one IBSR18 subject sits in the course distribution."""

    id: str
    folder: str
    spacing_mm: Spacing


def _ibsr_table() -> dict[str, IbsrSubject]:
    groups = {
        IBSR_SPACINGS_MM[0]: {"Training_Set": (1, 3, 4, 5, 6), "Validation_Set": (13, 14), "Test_Set": (2,)},
        IBSR_SPACINGS_MM[1]: {"Training_Set": (7, 8, 9), "Validation_Set": (11, 12), "Test_Set": (10,)},
        IBSR_SPACINGS_MM[2]: {"Training_Set": (16, 18), "Validation_Set": (17,), "Test_Set": (15,)},
    }
    table = {}
    for spacing, folders in groups.items():
        for folder, numbers in folders.items():
            for n in numbers:
                table[f"IBSR_{n:02d}"] = IbsrSubject(f"IBSR_{n:02d}", folder, spacing)
    return dict(sorted(table.items()))


IBSR18: Mapping[str, IbsrSubject] = _ibsr_table()
"""The 18 IBSR subjects with their course folder and spacing (from the course's description.json)."""


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject found on disk.

    Attributes:
        id: Subject id (its folder name; nnU-Net: the case id).
        folder: Course folder (``Training_Set``, ...), ``imagesTr``/``imagesTs`` (nnU-Net), or ``None`` in the
            flat layout.
        image_path: ``<id>.nii[.gz]`` (nnU-Net: ``<id>_0000<ending>``; Decathlon: the one 4-D file).
        label_path: ``<id>_seg.nii[.gz]`` (nnU-Net: ``labelsTr/<id><ending>``) or ``None`` when unlabelled.
        extra_image_paths: Files of input channels 1 .. N-1 (nnU-Net ``<id>_0001``, ...); empty for one channel.
        channels_in_image: ``> 1`` when ``image_path`` is one 4-D file holding every channel (Decathlon).
    """

    id: str
    folder: str | None
    image_path: Path
    label_path: Path | None
    extra_image_paths: tuple[Path, ...] = ()
    channels_in_image: int = 1


Layout = Literal["course", "flat", "nnunet"]


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found under a dataset root.

    Attributes:
        root: The dataset root.
        layout: ``course``, ``flat`` or ``nnunet`` (nnU-Net v2 or Decathlon: a root holding dataset.json).
        subjects: The subjects' files (nnU-Net: ``imagesTr`` cases sorted by id, then ``imagesTs`` ones).
        labels: The dataset's label set (IBSR layouts: :data:`~bench.data.labels.IBSR_LABELS`).
        channel_names: One name per input channel (IBSR layouts: ``("T1",)``).
    """

    root: Path
    layout: Layout
    subjects: tuple[SubjectFiles, ...]
    labels: LabelSet = IBSR_LABELS
    channel_names: tuple[str, ...] = ("T1",)

    def by_id(self) -> dict[str, SubjectFiles]:
        return {s.id: s for s in self.subjects}


def _is_nifti(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".nii") or path.name.endswith(".nii.gz"))


def _contains_nifti(folder: Path) -> bool:
    return any(_is_nifti(p) for p in folder.rglob("*"))


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _find_named(folder: Path, stem: str, what: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``; both present is ambiguous."""
    found = [folder / f"{stem}{ext}" for ext in (".nii.gz", ".nii") if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(
            f"both {found[0].name} and {found[1].name} exist for the {what}",
            path=folder,
            fix="keep only one of them",
        )
    return found[0] if found else None


def _subject_files(folder: Path, course_folder: str | None) -> SubjectFiles:
    subject_id = folder.name
    image = _find_named(folder, subject_id, "image")
    if image is None:
        present = [p.name for p in _visible(folder)] or ["nothing"]
        raise DataError(
            f"subject folder has no image file {subject_id}.nii.gz (or .nii); it contains: "
            f"{', '.join(present)}",
            path=folder,
            fix=f"name the T1 image {subject_id}.nii.gz and its label {subject_id}_seg.nii.gz",
        )
    label = _find_named(folder, f"{subject_id}_seg", "label")
    return SubjectFiles(subject_id, course_folder, image, label)


def _refuse_loose_files(folder: Path) -> None:
    loose = [p.name for p in _visible(folder) if _is_nifti(p)]
    if loose:
        raise DataError(
            f"NIfTI files lying loose in the folder: {', '.join(loose[:5])}",
            path=folder,
            fix="put each subject in its own folder <id>/<id>.nii.gz (+ <id>_seg.nii.gz)",
        )


def _check_unique(subjects: Sequence[SubjectFiles]) -> None:
    seen: dict[str, Path] = {}
    for s in subjects:
        if s.id in seen:
            raise DataError(
                f"duplicate subject id {s.id!r}: {seen[s.id].parent} and {s.image_path.parent}",
                path=s.image_path.parent,
                fix="each subject id may appear in only one folder",
            )
        seen[s.id] = s.image_path


def discover(root: str | Path) -> Discovery:
    """Find the subjects under a dataset root (course, flat or nnU-Net layout, see the module docstring).

    Raises:
        DataError: The root is missing or not a folder, no subject was found, a subject folder lacks its
            image (the message lists what is there), or a subject id appears twice; for an nnU-Net root,
            see :func:`bench.data.nnunet.discover_nnunet`.
    """
    root = Path(root)
    if not root.exists():
        raise DataError("dataset root does not exist", path=root, fix="pass the folder that holds the subjects")
    if not root.is_dir():
        raise DataError("dataset root is not a folder", path=root, fix="pass the folder that holds the subjects")
    from bench.data import nnunet  # imports this module

    if nnunet.is_nnunet_root(root):
        return nnunet.discover_nnunet(root)
    course = [root / name for name in COURSE_FOLDERS if (root / name).is_dir()]
    subjects: list[SubjectFiles] = []
    _refuse_loose_files(root)
    if course:
        layout: Layout = "course"
        for sub in _visible(root):
            if sub.is_dir() and sub.name not in COURSE_FOLDERS and _contains_nifti(sub):
                raise DataError(
                    f"unknown folder {sub.name!r} with NIfTI files next to the course folders",
                    path=sub,
                    fix=f"move its subjects into one of {', '.join(COURSE_FOLDERS)}, or remove it",
                )
        for folder in course:
            _refuse_loose_files(folder)
            subjects += [_subject_files(s, folder.name) for s in _visible(folder) if s.is_dir()]
    else:
        layout = "flat"
        subjects = [_subject_files(s, None) for s in _visible(root) if s.is_dir() and _contains_nifti(s)]
    if not subjects:
        raise DataError(
            "no subjects found; looked for the course layout "
            "{Training_Set,Validation_Set,Test_Set}/<id>/<id>.nii.gz and the flat layout <id>/<id>.nii.gz",
            path=root,
            fix="point --root at the dataset folder (e.g. the one holding Training_Set/)",
        )
    _check_unique(subjects)
    return Discovery(root, layout, tuple(subjects))
