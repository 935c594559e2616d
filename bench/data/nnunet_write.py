"""Writing nnU-Net v2 raw datasets: ``bench convert ibsr18 ROOT --to nnunet OUT`` and ``bench synth --format nnunet``.

A dataset is written whole into a hidden sibling folder (``.OUT.tmp-<pid>``) and renamed to ``OUT`` only
once complete, so a failure never leaves half a dataset. ``OUT`` may be new, empty, or an earlier output of
the same writer (a manifest file lists what it wrote; a folder holding anything else is refused).

Example:
    >>> convert_ibsr_to_nnunet("data/ibsr18", "data/Dataset001_IBSR18")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from bench.data.cohort import load_case
from bench.data.discovery import discover
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.data.nnunet import DATASET_JSON
from bench.errors import ConfigError
from bench.io import Volume, write_text_atomic, write_volume

CONVERSION_MANIFEST: Final = "brainbench_conversion.json"
"""Written by :func:`convert_ibsr_to_nnunet` into its output: what it wrote, from what."""
FILE_ENDING: Final = ".nii.gz"

NnunetCase = tuple[str, Sequence[Volume], Volume | None]
"""``(case id, input channels, label map holding the *stored* label values or None)``."""


# -------------------------------------------------------------------------------------------- output


def _manifest_files(manifest: Path) -> set[str] | None:
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return None
    return {str(f) for f in files} if isinstance(files, list) else None


def check_output(out: Path, marker: str, *, option: str, writer: str) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not an earlier output of ``writer``
    (its ``marker`` manifest lists every file in it).

    Raises:
        ConfigError: Naming ``out`` and, where there are any, the files the writer did not write.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} exists and is not a folder", path=out, fix="choose a new folder")
    if not out.exists() or not any(out.iterdir()):
        return
    manifest = out / marker
    listed = _manifest_files(manifest) if manifest.is_file() else None
    if listed is None:
        raise ConfigError(f"{option} is not empty and holds no {marker} from an earlier `{writer}`", path=out,
                          fix=f"choose an empty or new folder ({writer} never overwrites foreign files)")
    foreign = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                     if p.is_file() and p.name != marker and str(p.relative_to(out)) not in listed)
    if foreign:
        raise ConfigError(f"{option} holds files that the earlier `{writer}` did not write: {', '.join(foreign[:5])}",
                          path=out, fix="move them away, or choose another folder")


def replace_folder(out: Path, build: Callable[[Path], Sequence[Path]]) -> list[Path]:
    """Call ``build(temporary folder)``, then put that folder in ``out``'s place (an earlier ``out`` is removed
    only once the new one is complete); on an error the temporary folder is removed and ``out`` is untouched.

    Returns:
        The paths ``build`` wrote, moved under ``out``.
    """
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        written = [Path(p).relative_to(tmp) for p in build(tmp)]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return [out / p for p in written]


# ------------------------------------------------------------------------------------------- writing


def dataset_json(name: str, labels: LabelSet, channel_names: Sequence[str], num_training: int,
                 **extra: Any) -> dict[str, Any]:
    """nnU-Net v2's dataset.json content."""
    return {"name": name, "channel_names": {str(c): n for c, n in enumerate(channel_names)},
            "labels": labels.record(), "numTraining": num_training, "file_ending": FILE_ENDING, **extra}


def write_dataset(folder: Path, cases: Iterable[NnunetCase], *, name: str, labels: LabelSet,
                  channel_names: Sequence[str], test_ids: Collection[str] = (), **extra: Any) -> list[Path]:
    """Write an nnU-Net v2 raw dataset into ``folder`` (one case at a time, so ``cases`` may be a generator):
    labelled cases to ``imagesTr/<id>_XXXX.nii.gz`` + ``labelsTr/<id>.nii.gz``, unlabelled ones and those of
    ``test_ids`` to ``imagesTs/`` (a test case's label to ``labelsTs/``), then ``dataset.json`` (``extra`` keys
    added to it).

    Returns:
        Every file written, dataset.json last.
    """
    written: list[Path] = []
    num_training = 0
    for case_id, channels, label in cases:
        if len(channels) != len(channel_names):
            raise ValueError(f"case {case_id} has {len(channels)} channels; {len(channel_names)} expected")
        training = label is not None and case_id not in test_ids
        images = "imagesTr" if training else "imagesTs"
        for c, volume in enumerate(channels):
            written.append(write_volume(volume, folder / images / f"{case_id}_{c:04d}{FILE_ENDING}"))
        if label is not None:
            written.append(write_volume(label, folder / ("labelsTr" if training else "labelsTs") / f"{case_id}{FILE_ENDING}"))
            num_training += training
    content = dataset_json(name, labels, channel_names, num_training, **extra)
    written.append(write_text_atomic(folder / DATASET_JSON, json.dumps(content, indent=2) + "\n"))
    return written


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def convert_ibsr_to_nnunet(root: str | Path, out: str | Path, *, name: str | None = None) -> list[Path]:
    """Convert an IBSR-layout dataset (course or flat; the synthetic cohort too) into an nnU-Net v2 raw dataset.

    Every subject is read and checked as :func:`~bench.data.cohort.load_cohort` does and written back from
    the loaded volume (IBSR's trailing singleton axis dropped), so the converted files load to the same
    arrays, dtype and geometry; a label map is written on its image's grid (origin and direction included). Labelled subjects go to imagesTr/labelsTr, unlabelled ones to imagesTs; case
    ids stay the subject ids (``IBSR_01_0000.nii.gz``).

    Args:
        root: The IBSR-layout dataset root.
        out: The new dataset folder (new, empty, or an earlier conversion).
        name: dataset.json's ``name`` (default: ``root``'s folder name).

    Returns:
        The files written under ``out``.

    Raises:
        ConfigError: ``root`` is already an nnU-Net dataset, ``out`` and ``root`` overlap, or ``out`` holds
            foreign files.
        DataError: A bad subject file (as when loading), naming the file.
    """
    root, out = Path(root), Path(out)
    found = discover(root)
    if found.layout == "nnunet":
        raise ConfigError("ROOT already is an nnU-Net dataset (it holds dataset.json)", path=root,
                          fix="use it as it is: data.root=ROOT")
    if _inside(out, root) or _inside(root, out):
        raise ConfigError(f"OUT {out} and ROOT {root} overlap", path=out, fix="write the nnU-Net dataset elsewhere")
    check_output(out, CONVERSION_MANIFEST, option="OUT", writer="bench convert")

    def cases() -> Iterable[NnunetCase]:
        for files in found.subjects:
            case = load_case(files, "train" if files.label_path is not None else "predict")
            # on the image's grid: IBSR roots check a label's shape and spacing only, nnU-Net roots its origin too
            label = None if case.label is None else case.image.with_array(IBSR_LABELS.to_values(case.label.array))
            yield case.id, case.channels, label

    def build(folder: Path) -> list[Path]:
        written = write_dataset(folder, cases(), name=name or root.resolve().name, labels=IBSR_LABELS,
                                channel_names=("T1",))
        record = {"generator": "bench convert ibsr18", "source": str(root.resolve()),
                  "files": [str(p.relative_to(folder)) for p in written]}
        write_text_atomic(folder / CONVERSION_MANIFEST, json.dumps(record, indent=2) + "\n")
        return written

    return replace_folder(out, build)
