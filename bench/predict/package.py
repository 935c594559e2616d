"""A trained network as a self-contained folder: what ``bench predict`` needs, and nothing that runs code.

Layout (``FORMAT_VERSION`` 1)::

    brainbench_model.json      framework, architecture, label set ({stored value: name} in class-index
                               order), input channels (absent before they were recorded: one T1), patch size, inference settings,
                               preprocessing steps and fitted state, training grid, versions, source run,
                               training augmentation (absent in folders written before it was recorded)
    network/                   the segmenter's own save: segmenter.json + weights.pt (torch state dict,
                               read with weights_only=True) or weights.weights.h5 (Keras weights)
    preprocess/<i>-<name>.npz  arrays a fitted step learnt (histogram matching: its reference image),
                               compressed numpy, read with allow_pickle=False; input channel c > 0 of a
                               multi-channel model: <i>-<name>-c<c>.npz, its state under the step's "channels"

Reading it needs brainbench and the framework only (no Hydra, no training config); the MLflow logged
model of a run is this folder (``bench.tracking.models`` adds an ``MLmodel`` file).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import Case
from bench.data.labels import LabelSet
from bench.errors import ConfigError, DataError
from bench.preprocess.pipeline import Pipeline
from bench.spec import InferenceSpec, NetworkSpec
from bench.types import Shape3

PACKAGE_FILE = "brainbench_model.json"
NETWORK_DIR = "network"
PREPROCESS_DIR = "preprocess"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainingGrid:
    """The native grids the network was trained on: per training subject, spacing (mm) and direction."""

    spacings: tuple[tuple[float, float, float], ...]
    directions: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ModelInfo:
    """What ``brainbench_model.json`` records (see the module docstring)."""

    framework: str
    architecture: str
    labels: LabelSet
    patch_size: Shape3
    inference: InferenceSpec
    preprocess: dict[str, Any]
    training_grid: TrainingGrid
    versions: dict[str, str]
    source: dict[str, Any]
    augmentation: dict[str, Any] | None = None
    """The training augmentation's record (``AugmentSpec.record``: the transforms that were on); ``None`` in
    model folders written before it was recorded."""
    channels: tuple[str, ...] = ("T1",)
    """The input channels, in order (one T1 in model folders written before channels were recorded)."""

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    @property
    def resamples_spacing(self) -> bool:
        """Whether the preprocessing itself brings every image to one spacing (a ``spacing`` step)."""
        return any(step.get("name") == "spacing" for step in self.preprocess.get("steps", []))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for package in ("brainbench", "SimpleITK", "torch", "tensorflow-cpu", "keras"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


def write_package(
    directory: Path, save_network: Callable[[Path], object], spec: NetworkSpec, pipeline: Pipeline,
    train: Sequence[Case], source: Mapping[str, Any], labels: LabelSet, channels: Sequence[str] = ("T1",),
) -> Path:
    """Write a model folder at ``directory`` (built beside it, then renamed: never half-written).

    Args:
        directory: The folder to create (replaced if it exists).
        save_network: The trained segmenter's ``save`` (writes ``segmenter.json`` and the weights).
        spec: The network's spec (patch size, inference settings, framework, architecture).
        pipeline: The preprocessing pipeline, fitted on ``train``.
        train: The training cases (their native grids are recorded).
        source: Where it came from (run id, config hash, run name), recorded as is.
        labels: The label set the network's output channels are the classes of.
        channels: The input channels' names, in order.
    """
    directory = Path(directory)
    partial = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        save_network(partial / NETWORK_DIR)
        steps = []
        for index, step in enumerate(pipeline.steps):
            entry = {"name": step.name, "params": step.params(),
                     **_step_state(partial, f"{index}-{step.name}", step)}
            if pipeline.num_channels > 1:
                entry["channels"] = [_step_state(partial, f"{index}-{step.name}-c{c}", pipeline.channel_steps(c)[index])
                                     for c in range(1, pipeline.num_channels)]
            steps.append(entry)
        meta = {
            "format_version": FORMAT_VERSION,
            "framework": spec.framework,
            "architecture": spec.architecture,
            "labels": {str(v): n for n, v in labels.record().items()},
            "channels": list(channels),
            "patch_size": list(spec.sampling.patch_size),
            "inference": asdict(spec.inference),
            "preprocess": {"name": pipeline.name, "steps": steps},
            "training_grid": {"spacings": [list(c.image.spacing_mm) for c in train],
                              "directions": [list(c.image.direction) for c in train]},
            "versions": _versions(),
            "source": dict(source),
            "augmentation": spec.sampling.augmentation.record(),
        }
        (partial / PACKAGE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        partial.rename(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return directory


def _step_state(folder: Path, stem: str, step: Any) -> dict[str, Any]:
    """A fitted step's ``state`` and the file of its arrays (``None`` when it learnt none), written under ``folder``."""
    arrays = {key: np.asarray(array) for key, array in step.state_arrays().items()}
    name = f"{PREPROCESS_DIR}/{stem}.npz" if arrays else None
    if name is not None:
        (folder / PREPROCESS_DIR).mkdir(exist_ok=True)
        np.savez_compressed(folder / name, **arrays)  # type: ignore[arg-type]
    return {"state": step.state(), "arrays": name}


def package_root(path: Path) -> Path:
    """``path`` if it holds ``brainbench_model.json``, else its ``model/`` subfolder (a run's outputs folder)."""
    path = Path(path)
    if not path.exists():
        raise DataError("model folder does not exist", path=path,
                        fix="give runs:/RUN_ID, models:/NAME/VERSION or a folder with brainbench_model.json")
    for candidate in (path, path / "model"):
        if (candidate / PACKAGE_FILE).is_file():
            return candidate
    raise DataError(f"not a brainbench model (no {PACKAGE_FILE})", path=path,
                    fix="give a model folder written by a CNN run (<outputs>/<run>/model)")


def read_package(path: Path) -> tuple[ModelInfo, Pipeline]:
    """A model folder's record and its fitted preprocessing pipeline.

    Raises:
        DataError: Missing, corrupt or unknown-format record, an unknown framework or label set, or
            preprocessing state that does not fit.
    """
    from bench.networks.registry import FRAMEWORKS  # framework-neutral: imports no framework

    root = package_root(path)
    meta_path = root / PACKAGE_FILE
    try:
        meta = json.loads(meta_path.read_text())
        version, framework = meta["format_version"], meta["framework"]
        info = ModelInfo(
            framework=str(framework), architecture=str(meta["architecture"]),
            labels=LabelSet(tuple(str(v) for v in meta["labels"].values()), tuple(int(k) for k in meta["labels"])),
            channels=tuple(str(c) for c in meta.get("channels", ["T1"])),
            patch_size=(int(meta["patch_size"][0]), int(meta["patch_size"][1]), int(meta["patch_size"][2])),
            inference=InferenceSpec(**meta["inference"]), preprocess=dict(meta["preprocess"]),
            training_grid=TrainingGrid(tuple((float(a), float(b), float(c)) for a, b, c in
                                             meta["training_grid"]["spacings"]),
                                       tuple(tuple(float(v) for v in d) for d in meta["training_grid"]["directions"])),
            versions=dict(meta.get("versions", {})), source=dict(meta.get("source", {})),
            augmentation=dict(meta["augmentation"]) if meta.get("augmentation") is not None else None,
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"corrupt model record ({type(exc).__name__}: {exc})", path=meta_path) from exc
    except ConfigError as exc:
        raise DataError(f"corrupt model record: {exc.problem}", path=meta_path) from exc
    if version != FORMAT_VERSION:
        raise DataError(f"model format_version={version!r} is not {FORMAT_VERSION}", path=meta_path,
                        fix="use the brainbench version that wrote it")
    if info.framework not in FRAMEWORKS:
        raise DataError(f"model of unknown framework {info.framework!r}", path=meta_path,
                        fix=f"brainbench loads {', '.join(FRAMEWORKS)} models")
    if not info.channels:
        raise DataError("model record names no input channel", path=meta_path)
    return info, _pipeline(root, info.preprocess, meta_path, len(info.channels))


RESTORE_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def _pipeline(root: Path, record: dict[str, Any], meta_path: Path, channels: int = 1) -> Pipeline:
    """The fitted pipeline (each input channel's steps restored); an error names the file at fault: a step's
    ``.npz`` when its arrays do not load."""
    try:
        pipeline = Pipeline.from_spec([{"name": s["name"], **s["params"]} for s in record["steps"]],
                                      name=record.get("name"))
        pipeline.set_channels(channels)
        for index, saved in enumerate(record["steps"]):
            per_channel = [saved, *saved.get("channels", [])]
            if len(per_channel) != channels:
                raise DataError(f"preprocessing step {index} ({saved['name']}) has the state of {len(per_channel)} "
                                f"channel(s); the model has {channels}")
            for channel, state in enumerate(per_channel):
                arrays = _step_arrays(root, state["arrays"]) if state["arrays"] else {}
                pipeline.channel_steps(channel)[index].restore(state["state"], arrays)
    except RESTORE_ERRORS as exc:
        raise DataError(f"cannot restore the preprocessing ({type(exc).__name__}: {exc})", path=meta_path) from exc
    except DataError as exc:
        raise DataError(exc.problem, path=exc.path or meta_path, fix=exc.fix) from exc
    return pipeline


def _step_arrays(root: Path, name: str) -> dict[str, np.ndarray]:
    path = root / name
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except RESTORE_ERRORS as exc:
        raise DataError(f"cannot read the preprocessing state ({type(exc).__name__}: {exc})", path=path,
                        fix="re-log the model from its run, or copy the model folder again") from exc
