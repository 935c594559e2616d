"""A loaded model folder that segments scans: preprocessing, sliding window (optionally over the 8 axis
flips), back to the scan's grid; and ensembles that average several models' probabilities there.

The per-scan path is the one a run uses for its test subjects (``bench.segmenters.network_probabilities``
after ``Pipeline.apply``), so a model applied to its run's test subjects gives the run's label maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import Case
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.errors import ConfigError, DataError
from bench.predict import geometry
from bench.predict.package import NETWORK_DIR, ModelInfo, package_root, read_package
from bench.preprocess.pipeline import Pipeline
from bench.segmenters import network_probabilities
from bench.types import FloatArray

Progress = Callable[[int], None]
"""Called with the number of patches just predicted."""


@dataclass
class LoadedModel:
    """A model folder ready to predict: its record, fitted pipeline and network."""

    info: ModelInfo
    pipeline: Pipeline
    network: Any  # bench.contract.Segmenter
    path: Path
    label: str = ""

    @classmethod
    def load(cls, path: Path, label: str = "") -> LoadedModel:
        """Read ``path`` (a model folder, or a run outputs folder holding ``model/``) and load its network.

        Raises:
            DataError: See ``read_package`` and ``frameworks.load``.
        """
        from bench.training import frameworks

        root = package_root(path)
        info, pipeline = read_package(root)
        network = frameworks.load(root / NETWORK_DIR)
        if getattr(network, "framework", info.framework) != info.framework:
            raise ConfigError(f"{root}: network framework {network.framework!r} differs from the record's "
                              f"{info.framework!r}")
        return cls(info, pipeline, network, root, label or str(path))

    def describe(self) -> str:
        return f"{self.info.architecture} ({self.info.framework}) from {self.label}"

    @property
    def trained_without_flips(self) -> bool:
        """Whether its record says its training patches were never flipped (unknown for older folders: False)."""
        return self.info.augmentation is not None and "flip_prob" not in self.info.augmentation

    def probabilities(self, case: Case, *, flips: bool = False, progress: Progress | None = None) -> FloatArray:
        """Class probabilities ``float32[K, X, Y, Z]`` on ``case.image``'s own grid."""
        if case.num_channels != len(self.info.channels):
            raise DataError(f"{case.id} has {case.num_channels} input channel(s); {self.describe()} takes "
                            f"{len(self.info.channels)} ({', '.join(self.info.channels)})", path=case.image_path,
                            fix="give every channel's file, in the model's order (nnU-Net naming: <id>_0000, <id>_0001…)")
        grid = geometry.working_grid(case.image, self.info)
        working = case if grid is None else replace(
            case, image=geometry.resample_image(case.image, grid),
            extra=tuple(geometry.resample_image(v, grid) for v in case.extra))
        predict = self.network.predict_patches
        if progress is not None:
            def predict(batch: FloatArray) -> FloatArray:
                out: FloatArray = self.network.predict_patches(batch)
                progress(len(batch))
                return out
        prediction = network_probabilities(predict, self.pipeline.apply(working), self.pipeline,
                                           self.info.patch_size, self.info.inference,
                                           num_classes=self.info.num_classes, flips=flips)
        probs = prediction.probabilities
        return probs if grid is None else geometry.probabilities_back(probs, working.image, case.image)


def ensemble_probabilities(models: Sequence[LoadedModel], case: Case, *, flips: bool = False,
                           progress: Progress | None = None) -> FloatArray:
    """The mean of the models' class probabilities on ``case``'s grid (one model: its own)."""
    if not models:
        raise ConfigError("no model given", fix="pass --model at least once")
    labels = {tuple(m.info.labels.record().items()) for m in models}
    if len(labels) != 1:
        raise ConfigError(f"models predict different label sets ({'; '.join(m.info.labels.describe() for m in models)}); "
                          "they cannot be averaged")
    channels = {m.info.channels for m in models}
    if len(channels) != 1:
        raise ConfigError(f"models take different input channels {sorted(channels)}; they cannot be averaged")
    total: FloatArray | None = None
    for model in models:
        probs = model.probabilities(case, flips=flips, progress=progress)
        total = probs if total is None else total + probs
    assert total is not None
    return total if len(models) == 1 else (total / np.float32(len(models))).astype(np.float32)


def flip_warnings(models: Sequence[LoadedModel]) -> list[str]:
    """One warning per model that ``--tta flips`` is likely to hurt: trained without flip augmentation, it has
    never seen a mirrored brain (README, Ensembles and test-time augmentation: CSF Dice 0.878 -> 0.816)."""
    return [f"{m.describe()} was trained without flip augmentation; averaging over flips usually lowers its "
            "Dice (train with augmentation=flips or default, or leave --tta out)" for m in models
            if m.trained_without_flips]


def labels_of(probabilities: FloatArray, labels: LabelSet = IBSR_LABELS) -> np.ndarray:
    """The label map of ``[K, X, Y, Z]`` probabilities: the argmax class's stored value in ``labels``."""
    return labels.to_values(np.argmax(probabilities, axis=0).astype(np.uint8))
