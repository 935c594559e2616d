"""nnU-Net v2 raw datasets and Medical Segmentation Decathlon folders: ``dataset.json`` and the case files.

nnU-Net v2 (``kind="nnunet"``)::

    root/dataset.json        {"channel_names": {"0": "T1", "1": "FLAIR"}, "labels": {"background": 0, ...},
                              "numTraining": 10, "file_ending": ".nii.gz"}
    root/imagesTr/CASE_0000.nii.gz, CASE_0001.nii.gz ...  one file per input channel
    root/labelsTr/CASE.nii.gz                              every imagesTr case is labelled
    root/imagesTs/...                                     optional, unlabelled: split ``predict`` under folds
    root/labelsTs/CASE.nii.gz                              optional; read for imagesTs cases when present
    root/splits_final.json                                 optional: nnU-Net's folds (``bench.data.folds``)

Decathlon (``kind="decathlon"``): dataset.json has ``modality`` ({"0": "FLAIR", ...}), ``labels`` as value ->
name ({"0": "background", "1": "edema"}), a ``training`` list of {"image", "label"} paths and a ``test`` list
of image paths; an image is one file holding every channel (4-D ``X×Y×Z×C``, a 3-D file for one channel).
A listed ``<id>.nii.gz`` found instead as ``<id>_0000.nii.gz``, ``<id>_0001.nii.gz``, ... (nnU-Net v1's
converted Decathlon) is read per channel. Every file in imagesTr/labelsTr/imagesTs must be listed.

Case ids are sorted within imagesTr and within imagesTs. ``numTraining`` disagreeing with the cases on disk
is a logged warning, not an error: the files are what is loaded, and every image without its label (or
label without its image) is already an error.

Example:
    >>> info = read_dataset_json("data/Dataset001_Brain")          # doctest: +SKIP
    >>> info.labels.describe(), info.channel_names                 # doctest: +SKIP
    ('0 background, 1 CSF, 2 GM, 3 WM', ('T1',))
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from bench.data.discovery import Discovery, SubjectFiles
from bench.data.labels import LabelSet
from bench.errors import BenchError, DataError

log = logging.getLogger(__name__)

DATASET_JSON: Final = "dataset.json"
SPLITS_FINAL: Final = "splits_final.json"
IMAGE_ENDINGS: Final = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".bmp")
"""File endings that look like images (a file with one of them but not the dataset's ending is refused)."""
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

Kind = Literal["nnunet", "decathlon"]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says.

    Attributes:
        root: The dataset root (the folder holding dataset.json).
        kind: ``nnunet`` (v2) or ``decathlon``.
        name: ``name`` from dataset.json, else the root folder's name.
        labels: The classes and their stored values.
        channel_names: One name per input channel, in channel order.
        file_ending: The image files' ending, e.g. ``.nii.gz``.
        num_training: ``numTraining`` (``None`` when absent).
        training: Decathlon only: the (image, label) paths of the ``training`` list, relative to ``root``.
        test: Decathlon only: the image paths of the ``test`` list, relative to ``root``.
    """

    root: Path
    kind: Kind
    name: str
    labels: LabelSet
    channel_names: tuple[str, ...]
    file_ending: str
    num_training: int | None
    training: tuple[tuple[str, str], ...] = ()
    test: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.root / DATASET_JSON


def is_nnunet_root(root: str | Path) -> bool:
    """Whether ``root`` holds a ``dataset.json`` (an nnU-Net v2 or Decathlon dataset)."""
    return (Path(root) / DATASET_JSON).is_file()


# ------------------------------------------------------------------------------------------ dataset.json


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read JSON: {exc}", path=path, fix="fix the file's JSON syntax") from exc


def _channels(raw: Any, key: str, path: Path) -> tuple[str, ...]:
    """``{"0": "T1", "1": "FLAIR"}`` -> ``("T1", "FLAIR")``; keys must be exactly 0 .. N-1."""
    if not isinstance(raw, Mapping) or not raw:
        raise DataError(f"{key}={raw!r} must be a non-empty mapping of channel index to name", path=path,
                        fix=f'e.g. "{key}": {{"0": "T1"}}')
    keys = sorted(str(k) for k in raw)
    if keys != sorted(str(i) for i in range(len(raw))):
        raise DataError(f"{key} has the keys {', '.join(keys)}; they must be the channel indices 0 .. "
                        f"{len(raw) - 1}", path=path, fix='number the channels from "0", e.g. {"0": "T1", "1": "FLAIR"}')
    names = tuple(str(raw[str(i)] if str(i) in raw else raw[i]) for i in range(len(raw)))
    if any(not n.strip() for n in names):
        raise DataError(f"{key} has an empty channel name: {dict(raw)}", path=path)
    return names


def _labels(raw: Any, kind: Kind, path: Path) -> LabelSet:
    """nnU-Net's ``{"name": value}`` or the Decathlon's ``{"value": "name"}`` as a :class:`LabelSet`."""
    if kind == "decathlon" and isinstance(raw, Mapping):
        mapping: dict[str, Any] = {}
        for value, name in raw.items():
            if not str(value).isdigit():
                raise DataError(f"labels key {value!r} is not a label value; the Decathlon format maps values "
                                'to names, e.g. {"0": "background", "1": "edema"}', path=path)
            if str(name) in mapping:
                raise DataError(f"labels name the class {name!r} twice", path=path, fix="give every class its own name")
            mapping[str(name)] = int(value)
        raw = mapping
    if isinstance(raw, Mapping) and any(str(n).lower() == "ignore" for n in raw):
        raise DataError("labels has an 'ignore' label (nnU-Net's sparse annotation); training with ignored voxels "
                        "is not supported", path=path, fix="remove the ignore label and label every voxel")
    try:
        return LabelSet.from_mapping(raw, source="labels")
    except BenchError as exc:  # a ConfigError without the file: name dataset.json
        raise DataError(exc.problem, path=path, fix=exc.fix) from exc


def _require(data: Mapping[str, Any], keys: Sequence[str], kind: str, path: Path) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise DataError(f"{kind} dataset.json lacks the key(s) {', '.join(missing)}", path=path,
                        fix=f"add {', '.join(missing)} as nnU-Net's dataset format describes")


def _relative(entry: Any, key: str, path: Path) -> str:
    value = entry.get(key) if isinstance(entry, Mapping) else entry
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"entry {entry!r} has no {key} path", path=path,
                        fix='list entries as {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}')
    return value.removeprefix("./")


def _num_training(raw: Any, path: Path) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise DataError(f"numTraining={raw!r} must be a non-negative integer", path=path)
    return raw


def read_dataset_json(root: str | Path) -> DatasetInfo:
    """Read and check ``root/dataset.json`` (nnU-Net v2 or Decathlon, told apart by ``channel_names`` /
    ``modality``).

    Raises:
        DataError: No or unreadable dataset.json, a missing key, bad channel indices, bad or region labels,
            naming the file.
    """
    root = Path(root)
    path = root / DATASET_JSON
    if not path.is_file():
        raise DataError("no dataset.json", path=root, fix="point the root at the folder holding dataset.json")
    data = _load_json(path)
    if not isinstance(data, Mapping):
        raise DataError(f"dataset.json must hold a JSON object, not {type(data).__name__}", path=path)
    name = str(data.get("name") or root.name)
    if "channel_names" in data or "file_ending" in data:
        _require(data, ("channel_names", "labels", "file_ending"), "nnU-Net v2", path)
        ending = data["file_ending"]
        if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2:
            raise DataError(f"file_ending={ending!r} must be a file ending such as '.nii.gz'", path=path)
        return DatasetInfo(root, "nnunet", name, _labels(data["labels"], "nnunet", path),
                           _channels(data["channel_names"], "channel_names", path), ending,
                           _num_training(data.get("numTraining"), path))
    if "modality" in data:
        _require(data, ("modality", "labels", "training"), "Decathlon", path)
        if not isinstance(data["training"], list):
            raise DataError("training must be a list of {image, label} entries", path=path)
        training = tuple((_relative(e, "image", path), _relative(e, "label", path)) for e in data["training"])
        test = tuple(_relative(e, "image", path) for e in data.get("test") or [])
        ending = ".nii" if training and training[0][0].endswith(".nii") else ".nii.gz"
        return DatasetInfo(root, "decathlon", name, _labels(data["labels"], "decathlon", path),
                           _channels(data["modality"], "modality", path), ending,
                           _num_training(data.get("numTraining"), path), training, test)
    raise DataError("dataset.json has neither nnU-Net v2's channel_names and file_ending nor the Medical "
                    "Segmentation Decathlon's modality", path=path,
                    fix='for nnU-Net v2, add "channel_names", "labels", "numTraining" and "file_ending"')


# --------------------------------------------------------------------------------------------- discovery


def _files(folder: Path, ending: str) -> list[Path]:
    """Visible files of ``folder`` that end with ``ending``, sorted; an image file with another ending is refused."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.endswith(ending) and len(path.name) > len(ending):
            out.append(path)
        elif path.name.lower().endswith(IMAGE_ENDINGS):
            raise DataError(f"image file does not end with dataset.json's file_ending {ending!r}", path=path,
                            fix=f"convert it to {ending}, or set file_ending to its ending")
    return out


def _stem(path: Path, ending: str) -> str:
    return path.name[: -len(ending)]


def _channel_files(folder: Path, info: DatasetInfo) -> dict[str, list[Path]]:
    """Case id -> its channel files ``<id>_0000<ending>`` ... in channel order, every channel present."""
    found: dict[str, dict[int, Path]] = {}
    n = len(info.channel_names)
    for path in _files(folder, info.file_ending):
        match = _CHANNEL_FILE.match(_stem(path, info.file_ending))
        if match is None:
            raise DataError(f"image file name is not CASE_XXXX{info.file_ending}, XXXX being the 4-digit channel index",
                            path=path, fix=f"rename it, e.g. {_stem(path, info.file_ending)}_0000{info.file_ending}")
        channel = int(match["channel"])
        if channel >= n:
            raise DataError(f"channel {channel:04d}, but dataset.json's channel_names lists {n} channel(s) "
                            f"({', '.join(info.channel_names)})", path=path,
                            fix="add the channel to channel_names, or remove the file")
        found.setdefault(match["case"], {})[channel] = path
    out = {}
    for case_id in sorted(found):
        channels = found[case_id]
        for c in range(n):
            if c not in channels:
                missing = folder / f"{case_id}_{c:04d}{info.file_ending}"
                raise DataError(f"case {case_id} has no channel {c} ({info.channel_names[c]}): its file is missing",
                                path=missing, fix=f"add {missing.name}, one file per channel of channel_names")
        out[case_id] = [channels[c] for c in range(n)]
    return out


def _labels_by_id(folder: Path, ending: str) -> dict[str, Path]:
    return {_stem(p, ending): p for p in _files(folder, ending)}


def _match_labels(images: Mapping[str, Sequence[Path]], labels: Mapping[str, Path], image_folder: Path,
                  label_folder: Path, ending: str, *, required: bool) -> None:
    for case_id, path in labels.items():
        if case_id not in images:
            raise DataError(f"label file without images: {image_folder.name}/ has no {case_id}_0000{ending}",
                            path=path, fix=f"add the case's images to {image_folder.name}/, or remove the label")
    if required:
        for case_id in images:
            if case_id not in labels:
                raise DataError(f"case {case_id} in {image_folder.name}/ has no label file", path=label_folder /
                                f"{case_id}{ending}", fix=f"add its label map to {label_folder.name}/, or move the "
                                "case's images to imagesTs/, where cases are unlabelled")


def _subjects(images: Mapping[str, Sequence[Path]], labels: Mapping[str, Path], folder: str) -> list[SubjectFiles]:
    return [SubjectFiles(case_id, folder, paths[0], labels.get(case_id), tuple(paths[1:]))
            for case_id, paths in images.items()]


def _discover_v2(info: DatasetInfo) -> list[SubjectFiles]:
    root, ending = info.root, info.file_ending
    if not (root / "imagesTr").is_dir() and not (root / "imagesTs").is_dir():
        raise DataError("nnU-Net dataset has no imagesTr/ folder", path=root,
                        fix="put the training images in imagesTr/CASE_0000" + ending)
    train = _channel_files(root / "imagesTr", info)
    train_labels = _labels_by_id(root / "labelsTr", ending)
    _match_labels(train, train_labels, root / "imagesTr", root / "labelsTr", ending, required=True)
    test = _channel_files(root / "imagesTs", info)
    test_labels = _labels_by_id(root / "labelsTs", ending)
    _match_labels(test, test_labels, root / "imagesTs", root / "labelsTs", ending, required=False)
    return _subjects(train, train_labels, "imagesTr") + _subjects(test, test_labels, "imagesTs")


def _decathlon_case(info: DatasetInfo, image: str, label: str | None, folder: str) -> SubjectFiles:
    """One listed case: a file with every channel, or (nnU-Net v1's layout) one file per channel."""
    root, n = info.root, len(info.channel_names)
    path = root / image
    ending = next((e for e in (".nii.gz", ".nii") if path.name.endswith(e)), path.suffix)
    case_id = path.name[: -len(ending)] if ending else path.name
    label_path = None if label is None else root / label
    if label_path is not None and not label_path.is_file():
        raise DataError(f"label file of case {case_id}, listed in dataset.json's training, is missing",
                        path=label_path, fix="add the file, or remove the case from dataset.json's training list")
    if path.is_file():
        return SubjectFiles(case_id, folder, path, label_path, channels_in_image=n)
    per_channel = [path.parent / f"{case_id}_{c:04d}{ending}" for c in range(n)]
    if per_channel[0].is_file():
        for c, channel in enumerate(per_channel):
            if not channel.is_file():
                raise DataError(f"case {case_id} has no channel {c} ({info.channel_names[c]}): its file is missing",
                                path=channel, fix="add one file per channel of dataset.json's modality")
        return SubjectFiles(case_id, folder, per_channel[0], label_path, tuple(per_channel[1:]))
    raise DataError(f"image of case {case_id}, listed in dataset.json, is missing", path=path,
                    fix="add the file, or remove the case from dataset.json")


def _discover_decathlon(info: DatasetInfo) -> list[SubjectFiles]:
    subjects = [_decathlon_case(info, image, label, "imagesTr") for image, label in info.training]
    subjects += [_decathlon_case(info, image, None, "imagesTs") for image in info.test]
    listed = {p.resolve() for s in subjects for p in (s.image_path, *s.extra_image_paths, s.label_path) if p}
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        for path in _files(info.root / folder, info.file_ending):
            if path.resolve() not in listed:
                what = "label file without images:" if folder == "labelsTr" else "image file"
                raise DataError(f"{what} not listed in dataset.json's {'test' if folder == 'imagesTs' else 'training'}"
                                " list", path=path, fix="list it in dataset.json, or remove it")
    return sorted(subjects[: len(info.training)], key=lambda s: s.id) + sorted(
        subjects[len(info.training):], key=lambda s: s.id)


def discover_nnunet(root: str | Path) -> Discovery:
    """The cases of an nnU-Net v2 or Decathlon dataset (layout ``nnunet``; see the module docstring).

    Raises:
        DataError: A bad dataset.json (:func:`read_dataset_json`), an image file not named ``CASE_XXXX``, a
            channel missing for a case, a label without images or images without a label, a listed file that
            is missing, a case id used twice, or no case at all; each naming the file.
    """
    info = read_dataset_json(root)
    subjects = _discover_v2(info) if info.kind == "nnunet" else _discover_decathlon(info)
    seen: dict[str, SubjectFiles] = {}
    for s in subjects:
        if s.id in seen:
            raise DataError(f"duplicate case id {s.id!r}: {seen[s.id].image_path} and {s.image_path}",
                            path=s.image_path, fix="give every case its own id, across imagesTr and imagesTs")
        seen[s.id] = s
    if not subjects:
        raise DataError("no cases found in imagesTr/ or imagesTs/", path=info.root,
                        fix=f"add images named CASE_0000{info.file_ending}")
    n_train = sum(s.folder == "imagesTr" for s in subjects)
    if info.num_training is not None and info.num_training != n_train:
        log.warning("%s: numTraining is %d but imagesTr holds %d labelled case(s); using the %d found",
                    info.path, info.num_training, n_train, n_train)
    return Discovery(info.root, "nnunet", tuple(subjects), info.labels, info.channel_names)


# -------------------------------------------------------------------------------------- splits_final.json


def read_splits_final(root: str | Path, cases: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]] | None:
    """nnU-Net's ``splits_final.json`` beside dataset.json as ``[(train ids, val ids), ...]`` per fold, or
    ``None`` when there is none.

    Raises:
        DataError: Not a list of {"train": [...], "val": [...]}, an id that is not an imagesTr case (``cases``),
            or an id in both lists of one fold.
    """
    path = Path(root) / SPLITS_FINAL
    if not path.is_file():
        return None
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise DataError("splits_final.json must hold a non-empty list of folds", path=path,
                        fix='e.g. [{"train": ["a", "b"], "val": ["c"]}, ...]')
    known, folds = set(cases), []
    for k, fold in enumerate(data):
        if not isinstance(fold, Mapping) or not all(isinstance(fold.get(key), list) for key in ("train", "val")):
            raise DataError(f"fold {k} is not {{\"train\": [...], \"val\": [...]}}: {str(fold)[:80]}", path=path)
        train, val = tuple(str(i) for i in fold["train"]), tuple(str(i) for i in fold["val"])
        unknown = sorted({i for i in (*train, *val) if i not in known})
        if unknown:
            raise DataError(f"fold {k} lists cases that are not labelled imagesTr cases: {', '.join(unknown[:10])}",
                            path=path, fix="fix the ids, or remove splits_final.json to make folds from the data")
        both = sorted(set(train) & set(val))
        if both:
            raise DataError(f"fold {k} lists {', '.join(both[:10])} in both train and val", path=path)
        folds.append((train, val))
    return folds


def count_folds(root: str | Path) -> int | None:
    """How many folds ``root/splits_final.json`` holds (``None``: no such file, or not a list; checked later)."""
    path = Path(root) / SPLITS_FINAL
    if not path.is_file():
        return None
    data = _load_json(path)
    return len(data) if isinstance(data, list) and data else None
