"""Atlas-based baselines (Table 1 row 1): whole-volume segmenters built on registration (SimpleITK).

Three kinds, all predicting class probabilities ``float32[4, X, Y, Z]`` (bg, CSF, GM, WM) on the subject's
native grid:

- ``mni`` (:class:`MniAtlas`): the MNI152 2009 T1 template shipped with nilearn (skull-stripped with its brain
  mask) is registered to the subject; its tissue maps are warped (bg = 1 − mask, GM, WM, CSF = mask − GM − WM).
- ``train`` (:class:`TrainAtlas`): training subjects are registered to a reference training subject and their
  one-hot labels averaged into a probabilistic atlas (plus a histogram-matched mean intensity template); at
  prediction the template is registered to the subject and the probabilities warped.
- ``multi`` (:class:`MultiAtlas`): every training subject is registered to the test subject and the warped
  one-hot labels are averaged (a soft majority vote).

With ``restrict_to_foreground`` (default) voxels where the skull-stripped subject image is 0 are background.
Registration settings are in :class:`bench.baselines.registration.RegistrationSpec`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import SimpleITK as sitk

from bench.baselines.registration import (
    RegistrationSpec,
    crop_to_foreground,
    foreground_bounds,
    histogram_match,
    isotropic_grid,
    ras_to_sitk,
    register,
    sitk_threads,
    vector_image,
    vector_to_array,
    warp,
)
from bench.contract import RunLogger, TrainHistory
from bench.data.cohort import Case
from bench.errors import BenchError, ConfigError, DataError
from bench.io import Volume, read_volume, write_volume
from bench.segmenters import Prediction, TrainingData
from bench.types import NUM_CLASSES, FloatArray

if TYPE_CHECKING:
    from bench.preprocess.pipeline import Pipeline, PreparedCase

KINDS = ("mni", "train", "multi")
KIND_ALIASES = {
    **{k: k for k in KINDS},
    **{f"atlas_{k}": k for k in KINDS},
    "train_atlas": "train",
    "multi_atlas": "multi",
}
PARAMS_FILE = "atlas.json"
FINE_REGISTRATION: dict[str, Any] = {
    "working_spacing_mm": 1.5,
    "demons_shrink": (4, 2, 1),
    "demons_iterations": (60, 60, 60),
}
"""One registration per test subject (mni, train) affords a finer working grid than multi-atlas (one per atlas)."""
CLASS_FILES = ("bg", "csf", "gm", "wm")


class AtlasSegmenter:
    """Common machinery: subject checks, cropping, foreground restriction, normalisation, save/load."""

    kind: ClassVar[str] = ""
    framework = "sitk"
    registration_defaults: ClassVar[dict[str, Any]] = {}
    """Registration settings of this kind that differ from ``RegistrationSpec``'s defaults."""

    def __init__(
        self, *, registration: RegistrationSpec | None = None, restrict_to_foreground: bool = True
    ) -> None:
        self.registration = registration or RegistrationSpec(**self.registration_defaults)
        self.restrict_to_foreground = bool(restrict_to_foreground)

    @property
    def name(self) -> str:
        return f"atlas_{self.kind}"

    # ------------------------------------------------------------------ the Method surface (bench.segmenters)
    def fit(self, data: TrainingData, log: RunLogger) -> TrainHistory:
        """Build the atlas from ``data.train`` (no epochs, so the history is empty)."""
        self.fit_cases(data.train)
        return TrainHistory()

    def predict(self, case: Case, prepared: PreparedCase, pipeline: Pipeline) -> Prediction:
        """Probabilities on the subject's native grid: the atlas registers the native image itself."""
        return Prediction(self.predict_volume(case.image))

    # ------------------------------------------------------------------ interface
    def fit_cases(self, train: Sequence[Case]) -> None:
        """Build the atlas from labelled training cases (a no-op for ``mni``)."""
        raise NotImplementedError

    def predict_volume(self, image: Volume) -> FloatArray:
        """Class probabilities ``float32[4, X, Y, Z]`` on ``image``'s grid, summing to 1 over classes.

        Raises:
            DataError: The image is all zero or not finite.
            BenchError: A registration failed (names the stage).
        """
        fixed = sitk_subject(image)
        with sitk_threads(self.registration.threads):
            lo, hi = [0, 0, 0], list(fixed.GetSize())
            if self.restrict_to_foreground:  # then only the brain's box (plus margin) needs warping
                lo, hi = foreground_bounds(fixed, self.registration.margin_mm)
            reference = fixed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            cropped = self._warped_probabilities(fixed, reference)
        probabilities = np.zeros((NUM_CLASSES, *image.shape), np.float32)
        probabilities[0] = 1.0
        probabilities[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = cropped
        if self.restrict_to_foreground:
            outside = np.asarray(image.array) <= 0
            probabilities[:, outside] = 0.0
            probabilities[0, outside] = 1.0
        return normalise(probabilities)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "framework": self.framework,
            "kind": self.kind,
            "params": self.params(),
            "simpleitk_version": sitk.Version_VersionString(),
        }

    def params(self) -> dict[str, Any]:
        """Every constructor parameter as plain JSON values (``build_atlas(kind, **params)`` rebuilds it)."""
        return {"restrict_to_foreground": self.restrict_to_foreground, **self.registration.to_dict()}

    def save(self, directory: Path) -> None:
        """Write ``atlas.json`` (kind, parameters, state) and any atlas images into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self._save_state(directory)
        document = {"format": 1, "kind": self.kind, "params": self.params(), "state": state}
        tmp = directory / f".{PARAMS_FILE}.tmp"
        tmp.write_text(json.dumps(document, indent=2))
        tmp.replace(directory / PARAMS_FILE)

    @classmethod
    def load(cls, directory: Path) -> AtlasSegmenter:
        """Rebuild a saved atlas segmenter (of whatever kind was saved).

        Raises:
            DataError: ``atlas.json`` is missing or unreadable, or an atlas image is missing.
        """
        path = Path(directory) / PARAMS_FILE
        if not path.is_file():
            raise DataError("no atlas.json here; not a saved atlas segmenter", path=directory)
        try:
            document = json.loads(path.read_text())
            kind, params, state = document["kind"], document["params"], document["state"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"unreadable atlas description ({exc})", path=path) from exc
        segmenter = build_atlas(kind, **params)
        segmenter._load_state(Path(directory), state)
        return segmenter

    # ------------------------------------------------------------------ per kind
    def _warped_probabilities(self, fixed: sitk.Image, reference: sitk.Image) -> FloatArray:
        """Class probabilities ``float32[4, X, Y, Z]`` on ``reference``'s grid (not yet normalised)."""
        raise NotImplementedError

    def _save_state(self, directory: Path) -> dict[str, Any]:
        return {}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        return None


# ================================================================================================== MNI


class MniAtlas(AtlasSegmenter):
    """Label propagation from the MNI152 2009 template and its tissue probability maps (nilearn).

    Args:
        resolution_mm: Voxel size of the template and maps that are warped (1 = nilearn's native grid; the
            default 2 was as good on IBSR, CSF a little better, the 1 mm maps being sharper than IBSR's CSF).
    """

    kind = "mni"
    registration_defaults = FINE_REGISTRATION

    def __init__(self, *, resolution_mm: float = 2.0, **common: Any) -> None:
        super().__init__(**common)
        if not (isinstance(resolution_mm, int | float) and 1.0 <= resolution_mm <= 4.0):
            raise ConfigError(
                f"atlas setting resolution_mm={resolution_mm!r} is invalid; expected a size in mm from 1 to 4"
            )
        self.resolution_mm = float(resolution_mm)
        self._template: sitk.Image | None = None
        self._maps: sitk.Image | None = None

    def params(self) -> dict[str, Any]:
        return {"resolution_mm": self.resolution_mm, **super().params()}

    def fit_cases(self, train: Sequence[Case]) -> None:
        """Nothing to learn; loads the template so that the first prediction is not slower."""
        self._ensure_loaded()

    def tissue_maps(self) -> tuple[sitk.Image, sitk.Image]:
        """The skull-stripped template and the 4-component (bg, CSF, GM, WM) map image, on the MNI grid."""
        return self._ensure_loaded()

    def _ensure_loaded(self) -> tuple[sitk.Image, sitk.Image]:
        if self._template is None or self._maps is None:
            self._template, self._maps = load_mni152(self.resolution_mm)
        return self._template, self._maps

    def _warped_probabilities(self, fixed: sitk.Image, reference: sitk.Image) -> FloatArray:
        template, maps = self._ensure_loaded()
        transform = register(fixed, template, self.registration, label="subject <- MNI152 template")
        return vector_to_array(warp(maps, reference, transform))


# ============================================================================================ train atlas


class TrainAtlas(AtlasSegmenter):
    """A probabilistic atlas averaged from the training labels on a reference subject's space.

    Args:
        reference: Id of the reference training subject (default: the first training case).
        atlas_spacing_mm: Isotropic voxel size of the atlas grid.
    """

    kind = "train"
    registration_defaults = FINE_REGISTRATION

    def __init__(self, *, reference: str | None = None, atlas_spacing_mm: float = 1.0, **common: Any) -> None:
        super().__init__(**common)
        if not (isinstance(atlas_spacing_mm, int | float) and atlas_spacing_mm > 0):
            raise ConfigError(
                f"atlas setting atlas_spacing_mm={atlas_spacing_mm!r} is invalid; expected a size in mm"
            )
        self.reference = reference
        self.atlas_spacing_mm = float(atlas_spacing_mm)
        self._template: sitk.Image | None = None
        self._probabilities: sitk.Image | None = None
        self._atlas_ids: list[str] = []

    def params(self) -> dict[str, Any]:
        return {"reference": self.reference, "atlas_spacing_mm": self.atlas_spacing_mm, **super().params()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "atlas_ids": list(self._atlas_ids)}

    def fit_cases(self, train: Sequence[Case]) -> None:
        cases = _labelled(train, self.name)
        reference = self._pick_reference(cases)
        ref_image = sitk_subject(reference.image, source=reference.id)
        with sitk_threads(self.registration.threads):
            grid = isotropic_grid(
                crop_to_foreground(ref_image, self.registration.margin_mm), self.atlas_spacing_mm
            )
            template = sitk.GetArrayFromImage(warp(ref_image, grid, sitk.Transform()))
            probabilities = vector_to_array(warp(label_one_hot(reference), grid, sitk.Transform()))
            for case in cases:
                if case is reference:
                    continue
                moving = sitk_subject(case.image, source=case.id)
                transform = register(
                    ref_image, moving, self.registration, label=f"{reference.id} <- {case.id}"
                )
                template += sitk.GetArrayFromImage(warp(histogram_match(moving, ref_image), grid, transform))
                probabilities += vector_to_array(warp(label_one_hot(case), grid, transform))
        self._template = sitk.GetImageFromArray(template / np.float32(len(cases)))
        self._template.CopyInformation(grid)
        self._probabilities = vector_image(probabilities / np.float32(len(cases)), grid)
        self._atlas_ids = [c.id for c in cases]

    def _pick_reference(self, cases: list[Case]) -> Case:
        if self.reference is None:
            return cases[0]
        for case in cases:
            if case.id == self.reference:
                return case
        raise ConfigError(
            f"atlas setting reference={self.reference!r} is not a training case; available: {[c.id for c in cases]}"
        )

    def _warped_probabilities(self, fixed: sitk.Image, reference: sitk.Image) -> FloatArray:
        if self._template is None or self._probabilities is None:
            raise BenchError(f"{self.name} is not fitted; call fit_cases(train) or load a saved atlas first")
        transform = register(fixed, self._template, self.registration, label="subject <- training atlas")
        return vector_to_array(warp(self._probabilities, reference, transform))

    def _save_state(self, directory: Path) -> dict[str, Any]:
        if self._template is None or self._probabilities is None:
            raise BenchError(f"{self.name} is not fitted; nothing to save")
        write_volume(Volume.from_sitk(self._template), directory / "atlas_template.nii.gz")
        for index, name in enumerate(CLASS_FILES):
            channel = sitk.VectorIndexSelectionCast(self._probabilities, index, sitk.sitkFloat32)
            write_volume(Volume.from_sitk(channel), directory / f"atlas_prob_{name}.nii.gz")
        return {"atlas_ids": self._atlas_ids}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self._template = sitk.Cast(
            read_volume(directory / "atlas_template.nii.gz").to_sitk(), sitk.sitkFloat32
        )
        channels = [read_volume(directory / f"atlas_prob_{name}.nii.gz") for name in CLASS_FILES]
        self._probabilities = vector_image(np.stack([c.array for c in channels]), channels[0])
        self._atlas_ids = list(state.get("atlas_ids", []))


# ============================================================================================ multi-atlas


class MultiAtlas(AtlasSegmenter):
    """Multi-atlas label propagation: every training subject is registered to the test subject."""

    kind = "multi"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self._cases: list[Case] = []

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "atlas_ids": [c.id for c in self._cases]}

    def fit_cases(self, train: Sequence[Case]) -> None:
        self._cases = _labelled(train, self.name)

    def _warped_probabilities(self, fixed: sitk.Image, reference: sitk.Image) -> FloatArray:
        if not self._cases:
            raise BenchError(f"{self.name} is not fitted; call fit_cases(train) or load a saved atlas first")
        total = np.zeros((NUM_CLASSES, *reference.GetSize()), np.float32)
        for case in self._cases:
            moving = sitk_subject(case.image, source=case.id)
            transform = register(fixed, moving, self.registration, label=f"subject <- {case.id}")
            total += vector_to_array(warp(label_one_hot(case), reference, transform))
        total /= np.float32(len(self._cases))
        return total

    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Atlases read from files are saved as their paths; in-memory ones are written as NIfTI."""
        atlases = []
        for case in self._cases:
            image_path, label_path = case.image_path, case.label_path
            if image_path is None or label_path is None:
                image_path = write_volume(case.image, directory / "atlases" / f"{case.id}_image.nii.gz")
                assert case.label is not None
                label_path = write_volume(case.label, directory / "atlases" / f"{case.id}_label.nii.gz")
            atlases.append(
                {
                    "id": case.id,
                    "image": str(Path(image_path).resolve()),
                    "label": str(Path(label_path).resolve()),
                }
            )
        return {"atlases": atlases}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self._cases = [
            Case(
                id=entry["id"],
                split="train",
                image=read_volume(entry["image"]),
                label=read_volume(entry["label"]),
                image_path=Path(entry["image"]),
                label_path=Path(entry["label"]),
            )
            for entry in state.get("atlases", [])
        ]


# ============================================================================================== helpers


def sitk_subject(image: Volume, *, source: str = "subject image") -> sitk.Image:
    """The float32 SimpleITK image of a subject, refusing images registration cannot use.

    Raises:
        DataError: The image is all zero (nothing to register) or holds NaN/inf values.
    """
    array = np.asarray(image.array)
    if not np.isfinite(array).all():
        raise DataError(
            f"{source}: image holds NaN or infinite values; registration needs finite intensities"
        )
    if not np.any(array > 0):
        raise DataError(
            f"{source}: image is all zero (or has no positive voxel); nothing to register",
            fix="check that the file is the skull-stripped T1 and not an empty mask",
        )
    return sitk.Cast(image.to_sitk(), sitk.sitkFloat32)


def label_one_hot(case: Case) -> sitk.Image:
    """The case's label map as a 4-component float32 one-hot image on its native grid.

    Raises:
        DataError: A label value outside 0..3.
    """
    assert case.label is not None
    bad = np.setdiff1d(np.unique(case.label.array), np.arange(NUM_CLASSES))
    if bad.size:
        raise DataError(
            f"training case {case.id}: label values {bad.tolist()[:5]} outside 0..{NUM_CLASSES - 1}",
            path=case.label_path,
        )
    label_image = case.label.with_array(np.asarray(case.label.array, np.uint8)).to_sitk()
    lo, hi = foreground_bounds(label_image, margin_mm=4.0 * max(case.label.spacing_mm))
    cropped = label_image[
        lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]
    ]  # outside: all zero, read as background
    labels = sitk.GetArrayViewFromImage(cropped).transpose(2, 1, 0)
    one_hot = np.stack([labels == k for k in range(NUM_CLASSES)]).astype(np.float32)
    return vector_image(one_hot, cropped)


@functools.lru_cache(maxsize=2)
def load_mni152(resolution_mm: float = 1.0) -> tuple[sitk.Image, sitk.Image]:
    """The MNI152 2009 T1 template (skull-stripped) and its (bg, CSF, GM, WM) maps as SimpleITK images.

    The 1 mm files ship inside the nilearn wheel (no download). CSF = clip(mask − GM − WM, 0, 1),
    bg = 1 − mask, normalised to sum to 1. A coarser ``resolution_mm`` is made here with SimpleITK (linear
    resampling). Cached per resolution (callers must not modify the images).
    """
    from nilearn import datasets  # slow import: only when the MNI atlas is used

    template = datasets.load_mni152_template(resolution=1)
    mask = np.clip(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), 0.0, 1.0)
    gm = np.clip(datasets.load_mni152_gm_template(resolution=1).get_fdata(), 0.0, 1.0)
    wm = np.clip(datasets.load_mni152_wm_template(resolution=1).get_fdata(), 0.0, 1.0)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    maps = normalise(np.stack([1.0 - mask, csf, gm, wm]).astype(np.float32))
    brain = ras_to_sitk(np.asarray(template.get_fdata(), np.float32) * mask, template.affine)
    map_image = vector_image(maps, brain)
    if resolution_mm != 1.0:
        grid = isotropic_grid(brain, resolution_mm)
        brain = warp(brain, grid, sitk.Transform())  # no smoothing: it would leak into the background
        coarse = normalise(vector_to_array(warp(map_image, grid, sitk.Transform())))  # edge voxels: no mass
        map_image = vector_image(coarse, grid)
    return brain, map_image


def normalise(probabilities: FloatArray) -> FloatArray:
    """Clip negatives and divide by the class sum, in place; voxels with no mass become background."""
    probabilities = np.clip(probabilities, 0.0, None, out=probabilities)
    total = probabilities.sum(axis=0)
    empty = total <= 1e-6
    probabilities[0][empty] = 1.0
    total[empty] = 1.0
    probabilities /= total[None]
    return probabilities.astype(np.float32, copy=False)


def _labelled(train: Sequence[Case], name: str) -> list[Case]:
    cases = list(train)
    if not cases:
        raise DataError(f"{name} needs at least one labelled training case; got none")
    for case in cases:
        if case.label is None:
            raise DataError(
                f"training case {case.id} has no label map; {name} needs labels", path=case.image_path
            )
        if case.label.shape != case.image.shape:
            raise DataError(
                f"training case {case.id}: label shape {case.label.shape} differs from image shape {case.image.shape}",
                path=case.label_path,
            )
    return cases


ATLAS_CLASSES: dict[str, type[AtlasSegmenter]] = {"mni": MniAtlas, "train": TrainAtlas, "multi": MultiAtlas}
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "mni": ("resolution_mm",),
    "train": ("reference", "atlas_spacing_mm"),
    "multi": (),
}


def build_atlas(kind: str, **params: Any) -> AtlasSegmenter:
    """Build an atlas segmenter from plain config values.

    Args:
        kind: ``"mni"``, ``"train"`` or ``"multi"`` (also accepted: ``atlas_mni``, ``atlas_train``,
            ``atlas_multi``, ``train_atlas``, ``multi_atlas``).
        **params: ``restrict_to_foreground``, any :class:`RegistrationSpec` field, and the kind's own
            settings (``resolution_mm`` for mni; ``reference``, ``atlas_spacing_mm`` for train).

    Raises:
        ConfigError: Unknown kind, unknown parameter or invalid value (the message names it).
    """
    canonical = KIND_ALIASES.get(str(kind).lower()) if isinstance(kind, str) else None
    if canonical is None:
        raise ConfigError(f"unknown atlas kind {kind!r}; expected one of {sorted(KIND_ALIASES)}")
    registration_names = RegistrationSpec.field_names()
    allowed = {"restrict_to_foreground", *registration_names, *KIND_PARAMS[canonical]}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown atlas parameter(s) {unknown} for kind {canonical!r}; allowed: {sorted(allowed)}"
        )
    atlas_class = ATLAS_CLASSES[canonical]
    registration = RegistrationSpec(
        **{
            **atlas_class.registration_defaults,
            **{k: v for k, v in params.items() if k in registration_names},
        }
    )
    own = {k: v for k, v in params.items() if k not in registration_names}
    return atlas_class(registration=registration, **own)
