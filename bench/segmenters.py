"""One fit/predict surface for every segmentation method a run can compare.

``experiment`` only ever calls ``fit(data, log)``, ``predict(case, prepared, pipeline)``, ``save`` and
``describe``. Two kinds implement it:

- ``PatchNetwork`` (below): a network of any registered architecture in torch or TF, trained on patches from
  ``bench.patching.sampler.PatchSampler`` and applied by sliding-window inference, so every framework is fed the same
  batches and scored through the same stitching;
- the atlas baselines (``bench.baselines.atlas``), which register whole volumes.

Which one a run uses is decided once, when the config is translated (``bench.config``): the spec builds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bench.contract import PatchBatch, PatchSource, RunLogger, Segmenter, TrainHistory
from bench.data.cohort import Case
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.errors import ConfigError, DataError
from bench.patching.inference import PredictPatches, background_outside_mask, predict_volume_with_stats
from bench.patching.sampler import PatchRegion, PatchSampler, PatchSubject, patch_centre_region
from bench.preprocess.pipeline import Pipeline, PreparedCase
from bench.spec import AtlasSpec
from bench.types import FloatArray

if TYPE_CHECKING:
    from bench.spec import InferenceSpec, NetworkSpec, SamplingSpec, SegmenterSpec


@dataclass(frozen=True)
class TrainingData:
    """The training and validation subjects, and every subject after preprocessing (by id)."""

    train: Sequence[Case]
    val: Sequence[Case]
    prepared: Mapping[str, PreparedCase]
    labels: LabelSet = IBSR_LABELS
    """What the class indices of the labels mean (names the validation Dice of each class)."""


@dataclass(frozen=True)
class Prediction:
    """Class probabilities ``float32[K, X, Y, Z]`` on the subject's native grid, and patch counts."""

    probabilities: FloatArray
    patches_predicted: int = 0
    patches_skipped: int = 0


class Method(Protocol):
    """What ``experiment`` needs of a segmentation method (a trained network or an atlas baseline)."""

    def fit(self, data: TrainingData, log: RunLogger) -> TrainHistory: ...

    def predict(self, case: Case, prepared: PreparedCase, pipeline: Pipeline) -> Prediction: ...

    def save(self, directory: Path) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class FixedEpoch:
    """A PatchSource that always yields the first ``limit`` batches of epoch 0 (a fixed validation set)."""

    def __init__(self, source: PatchSource, limit: int | None) -> None:
        self.source = source
        self.class_names: tuple[str, ...] = tuple(getattr(source, "class_names", IBSR_LABELS.names))
        self.patch_size = source.patch_size
        self.batch_size = source.batch_size
        self.limit = len(source) if limit is None else min(limit, len(source))

    def batches(self, epoch: int) -> Iterator[PatchBatch]:
        for index, batch in enumerate(self.source.batches(0)):
            if index >= self.limit:
                return
            yield batch

    def __len__(self) -> int:
        return self.limit


def patch_subjects(
    cases: Sequence[PreparedCase], patch_size: Sequence[int] = (1, 1, 1), region: PatchRegion = "centre_in_brain"
) -> list[PatchSubject]:
    """Prepared labelled cases as sampler subjects whose mask is where patch centres may lie (``region``);
    DataError naming an unlabelled one."""
    out = []
    for case in cases:
        if case.label is None:
            raise DataError(f"subject {case.id} has no label but is used for training", path=case.native.image_path)
        centres = patch_centre_region(case.mask, patch_size, region)
        out.append(PatchSubject(image=case.network_input(), label=case.label.array, mask=centres, id=case.id))
    return out


def patch_sources(
    train: Sequence[PatchSubject], val: Sequence[PatchSubject], s: SamplingSpec, seed: int,
    class_names: Sequence[str] = IBSR_LABELS.names,
) -> tuple[PatchSampler, PatchSource | None]:
    """The training sampler (``s``'s mode, oversampling, class centres and augmentation, seeded by ``seed``) and the fixed
    validation set (grid patches without overlap, the first ``s.val_batches`` batches, never augmented); both
    name their classes ``class_names``."""
    source = PatchSampler(
        train, patch_size=s.patch_size, step=s.step, batch_size=s.batch_size, seed=seed,
        mode=s.mode,  # type: ignore[arg-type]
        patches_per_epoch=s.patches_per_epoch if s.mode != "grid" else None,
        oversample=s.oversample_class is not None, oversample_class=s.oversample_class or 1,
        oversample_factor=s.oversample_factor, augment=s.augmentation, class_fraction=s.class_fraction,
        class_centres=s.class_centres, class_names=class_names,
    )
    if not val:
        return source, None
    grid = PatchSampler(val, patch_size=s.patch_size, step=s.patch_size, batch_size=s.batch_size, seed=seed + 1,
                        mode="grid", shuffle=True, class_names=class_names)
    return source, FixedEpoch(grid, s.val_batches)


class PatchNetwork:
    """A patch-based network (any registered architecture, torch or TF) behind the ``Method`` surface.

    The framework is imported when ``fit`` (or ``load``) builds the network, after the patch size has been
    checked against the preprocessed volumes.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.network: Segmenter | None = None

    def _built(self) -> Segmenter:
        if self.network is None:
            raise DataError(f"{self.spec.architecture} has not been trained or loaded yet")
        return self.network

    def check(self) -> None:
        """Build the network (importing its framework) and make one dry forward pass on a zero batch of the
        training patches, on the training device: ConfigError naming the model, what it gave and what was
        expected, before anything is trained or tracked."""
        from bench.training import frameworks

        train = self.spec.train
        frameworks.configure_threads(self.spec.framework, train.num_threads)  # before TF starts
        network = frameworks.build_network(self.spec.entry, self.spec.config, self.spec.framework)
        batch = min(self.spec.sampling.batch_size, 2)  # two patches: what batch norm needs in training mode
        network.check_forward(self.spec.sampling.patch_size, batch, train)  # type: ignore[attr-defined]
        self.network = network

    def fit(self, data: TrainingData, log: RunLogger) -> TrainHistory:
        """Check the patch size, build the network (unless ``check`` did), sample patches and train (see
        ``bench.training.loop``; the first fit re-initialises the weights from the seed)."""
        from bench.training import frameworks

        s = self.spec.sampling
        self._check_patch_fits(list(data.prepared.values()))
        if self.network is None:
            frameworks.configure_threads(self.spec.framework, self.spec.train.num_threads)  # before TF starts
            self.network = frameworks.build_network(self.spec.entry, self.spec.config, self.spec.framework)
        train, val = patch_sources(
            patch_subjects([data.prepared[c.id] for c in data.train], s.patch_size, s.region),  # type: ignore[arg-type]
            patch_subjects([data.prepared[c.id] for c in data.val], s.patch_size, s.region),  # type: ignore[arg-type]
            s, self.spec.train.seed, data.labels.names,
        )
        return self.network.fit(train, val, self.spec.train, log)

    def _check_patch_fits(self, prepared: Sequence[PreparedCase]) -> None:
        patch = self.spec.sampling.patch_size
        for case in prepared:
            if any(p > s for p, s in zip(patch, case.image.shape, strict=True)):  # every channel has its grid
                raise ConfigError(
                    f"profile.patch_size={list(patch)} is larger than the preprocessed volume "
                    f"{list(case.image.shape)} of {case.id}", fix="use a smaller patch size",
                )

    def predict(self, case: Case, prepared: PreparedCase, pipeline: Pipeline) -> Prediction:
        """Sliding-window probabilities, background far outside the brain, mapped back to the native grid."""
        classes = int(getattr(self.spec.config, "num_classes", 4))  # a config without it: the paper's 4 (bench.config)
        return network_probabilities(self._built().predict_patches, prepared, pipeline,
                                     self.spec.sampling.patch_size, self.spec.inference, num_classes=classes)

    def save(self, directory: Path) -> None:
        self._built().save(directory)

    def describe(self) -> dict[str, Any]:
        return self._built().describe()


FLIPS: tuple[tuple[int, ...], ...] = tuple(
    tuple(axis for axis in range(3) if mask >> axis & 1) for mask in range(8))
"""The 8 combinations of flipping the x, y and z axes (the first is no flip): test-time augmentation."""


def network_probabilities(
    predict_patches: PredictPatches, prepared: PreparedCase, pipeline: Pipeline, patch_size: Sequence[int],
    inference: InferenceSpec, *, num_classes: int, flips: bool = False,
) -> Prediction:
    """A network's class probabilities for one preprocessed case, on the case's native grid.

    Sliding-window inference with ``inference``'s overlap, blending, batch size and background skipping,
    background beyond ``background_margin_voxels`` of the brain mask, then ``pipeline.invert_probabilities``.
    Both a run (``PatchNetwork.predict``) and ``bench predict`` go through here. With ``flips`` the image
    (and its mask) is flipped in each of the 8 ways of ``FLIPS``, predicted, flipped back, and the 8
    probability maps are averaged (on the preprocessed grid, before inversion). ``num_classes``: the network's
    output channels (the data's classes).
    """
    total: FloatArray | None = None
    predicted = skipped = 0
    for axes in FLIPS if flips else FLIPS[:1]:
        volume = prepared.network_input()  # [X, Y, Z] or [C, X, Y, Z]
        image = np.flip(volume, tuple(a + volume.ndim - 3 for a in axes)) if axes else volume
        mask = np.flip(prepared.mask, axes) if axes else prepared.mask
        probs, stats = predict_volume_with_stats(
            predict_patches, np.ascontiguousarray(image), patch_size, num_classes=num_classes, overlap=inference.overlap,
            blending=inference.blending,  # type: ignore[arg-type]
            batch_size=inference.batch_size, mask=mask if inference.skip_background else None,
        )
        if inference.background_margin_voxels is not None:
            background_outside_mask(probs, mask, inference.background_margin_voxels)
        if axes:
            probs = np.flip(probs, tuple(a + 1 for a in axes))
        total = probs if total is None else total + probs
        predicted, skipped = predicted + stats.num_predicted, skipped + stats.num_skipped
    assert total is not None
    if flips:
        total = np.ascontiguousarray(total / np.float32(len(FLIPS)), dtype=np.float32)
    return Prediction(pipeline.invert_probabilities(total, prepared), predicted, skipped)


def build_method(spec: SegmenterSpec) -> Method:
    """The untrained method a run's segmenter spec describes: a patch network (its framework is imported when
    it is checked or fitted) or an atlas baseline."""
    if isinstance(spec, AtlasSpec):
        from bench.baselines.atlas import build_atlas

        return build_atlas(**spec.params)
    return PatchNetwork(spec)
