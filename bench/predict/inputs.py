"""The scans ``bench predict`` is given: one NIfTI file, one case's channel files, or a folder of them (one file
per scan, or nnU-Net naming ``<id>_0000.nii.gz``, ``<id>_0001.nii.gz`` ... one file per input channel), each
checked before any is predicted, and the names of what it writes for each."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.cohort import Case, check_image
from bench.errors import DataError
from bench.io import Volume, read_channels, read_volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CHANNEL_SUFFIX = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")
"""nnU-Net's channel naming: ``<case id>_<4-digit channel>``."""
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Scan:
    """One scan: its first channel's file, the subject id (``IBSR_01.nii.gz`` -> ``IBSR_01``, ``case_0000.nii.gz``
    -> ``case``) and the files of channels 1 .. N-1."""

    path: Path
    id: str
    extra: tuple[Path, ...] = ()
    channels_in_file: int = 1
    """``> 1``: ``path`` is one 4-D image holding every channel (the Decathlon's multi-modal images)."""

    @property
    def num_channels(self) -> int:
        return max(1 + len(self.extra), self.channels_in_file)

    def load(self) -> Case:
        """The scan as an unlabelled case; DataError for a non-3D (or, for ``channels_in_file``, non-4D),
        non-finite or constant image, or channels on different grids."""
        if self.channels_in_file > 1:
            volumes = read_channels(self.path, self.channels_in_file)
            for volume in volumes:
                check_image(volume, self.path)
            return Case(self.id, "predict", volumes[0], None, self.path, None, tuple(volumes[1:]),
                        (self.path,) * (len(volumes) - 1))
        image = read_volume(self.path)
        check_image(image, self.path)
        extra = []
        for path in self.extra:
            channel = read_volume(path)
            check_image(channel, path)
            _check_same_grid(channel, image, path, self.path)
            extra.append(channel)
        return Case(self.id, "predict", image, None, self.path, None, tuple(extra), self.extra)


def _check_same_grid(channel: Volume, first: Volume, path: Path, first_path: Path) -> None:
    same = (channel.shape == first.shape
            and np.allclose(channel.spacing_mm, first.spacing_mm, rtol=0.0, atol=GEOMETRY_TOLERANCE_MM)
            and np.allclose(channel.origin_mm, first.origin_mm, rtol=0.0, atol=GEOMETRY_TOLERANCE_MM)
            and np.allclose(channel.direction, first.direction, rtol=0.0, atol=GEOMETRY_TOLERANCE_MM))
    if not same:
        raise DataError(f"channel on another grid than {first_path.name} (shape {channel.shape} vs {first.shape}, "
                        f"spacing {channel.spacing_mm} vs {first.spacing_mm} mm)", path=path,
                        fix="resample every channel of a case onto one grid")


def scan_id(path: Path) -> str | None:
    """The name without its NIfTI suffix, or None when ``path`` is not named like a NIfTI file."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def find_scans(inputs: Path | Sequence[Path], channels: int = 1) -> list[Scan]:
    """The scans of ``inputs``: one file, one case's channel files (in channel order), or one folder (not
    recursive) of one file per scan or of nnU-Net-named channel files (``<id>_0000.nii.gz`` ...), for a model of
    ``channels`` input channels.

    Raises:
        DataError: Missing path, a file not named ``.nii``/``.nii.gz``, a folder without one, two files that
            would write the same output name, a case whose channel files are missing or too many, or a number of
            files that is not the model's number of channels.
    """
    paths = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise DataError("input does not exist", path=path, fix="give a .nii/.nii.gz file or a folder of them")
    if len(paths) > 1:
        return [_channel_files(paths, channels)]
    path = paths[0]
    if path.is_file():
        return [_channel_files([path], channels)]
    files = [(p, i) for p in sorted(path.iterdir()) if p.is_file() and (i := scan_id(p)) is not None
             and not p.name.startswith(".")]
    if not files:
        raise DataError("folder holds no .nii or .nii.gz file", path=path)
    if channels > 1 or all(CHANNEL_SUFFIX.match(i) for _, i in files):
        return _nnunet_scans(path, files, channels)
    scans = [Scan(p, i) for p, i in files]
    ids = [s.id for s in scans]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise DataError(f"several files would write the same output for {', '.join(clashes)}", path=path,
                        fix="keep one of <id>.nii and <id>.nii.gz")
    return scans


def _channel_files(paths: Sequence[Path], channels: int) -> Scan:
    """One case given as its channel files, in order."""
    ids = []
    for path in paths:
        if path.is_dir():
            raise DataError("a folder among several --input files", path=path,
                            fix="give one folder, or the channel files of one case")
        found = scan_id(path)
        if found is None:
            raise DataError("not a NIfTI file (expected .nii or .nii.gz)", path=path)
        ids.append(found)
    named = CHANNEL_SUFFIX.match(ids[0])
    case_id = named["id"] if named else ids[0]
    if len(paths) == 1 and channels > 1 and _is_4d(paths[0]):  # one Decathlon image holding every channel
        return Scan(paths[0], case_id, channels_in_file=channels)
    if len(paths) != channels:
        raise DataError(f"{len(paths)} input file(s) for a model of {channels} input channel(s)", path=paths[0],
                        fix=f"give the {channels} channel files of one case, in order (or a folder in nnU-Net naming, "
                        "or one 4-D image holding every channel)")
    return Scan(paths[0], case_id, tuple(paths[1:]))


def _is_4d(path: Path) -> bool:
    """Whether a NIfTI file's header says it holds a 4-D image of more than one volume (read lazily)."""
    try:
        import nibabel as nib

        shape = nib.load(str(path)).shape  # type: ignore[attr-defined]
    except Exception:  # an unreadable file is reported when it is loaded
        return False
    return len(shape) == 4 and shape[3] > 1


def _nnunet_scans(folder: Path, files: Sequence[tuple[Path, str]], channels: int) -> list[Scan]:
    """Scans of a folder in nnU-Net naming: every case needs channel files ``_0000 .. _{channels-1:04d}``."""
    cases: dict[str, dict[int, Path]] = {}
    for path, name in files:
        named = CHANNEL_SUFFIX.match(name)
        if named is None:
            raise DataError(f"{path.name} is not named <case>_<channel>.nii.gz (nnU-Net naming, e.g. "
                            f"{name}_0000.nii.gz)", path=folder,
                            fix="name each channel file <case>_0000.nii.gz, <case>_0001.nii.gz, …")
        channel = int(named["channel"])
        if channel in cases.setdefault(named["id"], {}):
            raise DataError(f"two files for channel {channel} of case {named['id']}", path=path,
                            fix="keep one of <case>_NNNN.nii and .nii.gz")
        cases[named["id"]][channel] = path
    scans = []
    for case_id, by_channel in cases.items():
        wanted = set(range(channels))
        if set(by_channel) != wanted:
            missing = sorted(wanted - set(by_channel))
            extra = sorted(set(by_channel) - wanted)
            what = (f"lacks channel file(s) {', '.join(f'{case_id}_{c:04d}' for c in missing)}" if missing
                    else f"has channel file(s) {', '.join(f'{case_id}_{c:04d}' for c in extra)} beyond the model's "
                    f"{channels}")
            raise DataError(f"case {case_id} {what}", path=folder,
                            fix=f"give channels _0000 to _{channels - 1:04d} of every case")
        scans.append(Scan(by_channel[0], case_id, tuple(by_channel[c] for c in range(1, channels))))
    return scans


def check_output_folder(out: Path) -> Path:
    """``out`` (created later, by the first write); DataError when it, or a folder above it, is a file."""
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise DataError("output folder is a file" if folder == out else f"{folder} is a file, not a folder",
                            path=out, fix="give a folder path for --out")
    return out
