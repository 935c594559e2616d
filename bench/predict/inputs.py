"""The scans ``bench predict`` is given: one NIfTI file or a folder of them, each checked before any is
predicted, and the names of what it writes for each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data.cohort import Case, check_image
from bench.errors import DataError
from bench.io import read_volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Scan:
    """One input file and the subject id taken from its name (``IBSR_01.nii.gz`` -> ``IBSR_01``)."""

    path: Path
    id: str

    def load(self) -> Case:
        """The scan as an unlabelled case; DataError for a non-3D, non-finite or constant image."""
        image = read_volume(self.path)
        check_image(image, self.path)
        return Case(self.id, "predict", image, None, self.path)


def scan_id(path: Path) -> str | None:
    """The name without its NIfTI suffix, or None when ``path`` is not named like a NIfTI file."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def find_scans(path: Path) -> list[Scan]:
    """The scan ``path`` or the NIfTI files in folder ``path`` (sorted; not recursive).

    Raises:
        DataError: Missing path, a file not named ``.nii``/``.nii.gz``, a folder without one, or two
            files that would write the same output name.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("input does not exist", path=path, fix="give a .nii/.nii.gz file or a folder of them")
    if path.is_file():
        found = scan_id(path)
        if found is None:
            raise DataError("not a NIfTI file (expected .nii or .nii.gz)", path=path)
        return [Scan(path, found)]
    scans = [Scan(p, i) for p in sorted(path.iterdir()) if p.is_file() and (i := scan_id(p)) is not None
             and not p.name.startswith(".")]
    if not scans:
        raise DataError("folder holds no .nii or .nii.gz file", path=path)
    ids = [s.id for s in scans]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise DataError(f"several files would write the same output for {', '.join(clashes)}", path=path,
                        fix="keep one of <id>.nii and <id>.nii.gz")
    return scans


def check_output_folder(out: Path) -> Path:
    """``out`` (created later, by the first write); DataError when it, or a folder above it, is a file."""
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise DataError("output folder is a file" if folder == out else f"{folder} is a file, not a folder",
                            path=out, fix="give a folder path for --out")
    return out
