"""Intensity steps (paper §4.1.2): standardisation and histogram matching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from bench.errors import ConfigError, DataError
from bench.preprocess.base import PreprocessStep
from bench.preprocess.prepared import PreparedCase, array_sha256


@dataclass
class Standardisation(PreprocessStep):
    """Z-score with the mean and standard deviation of the intensities inside the brain mask (§4.1.2).

    Applied to the whole image, so inside the mask the values have mean 0 and std 1, and the background
    (0 in skull-stripped images, or after histogram matching / CLAHE) becomes the constant
    ``-mean / std`` (about -2 to -3 on IBSR). Per case: nothing is learnt.
    """

    name: ClassVar[str] = "standardise"

    def apply(self, case: PreparedCase) -> PreparedCase:
        image = case.image.array
        inside = image[case.mask]
        if inside.size == 0:
            raise DataError(f"{case.id}: empty brain mask, cannot standardise", path=case.native.image_path)
        mean = float(np.mean(inside, dtype=np.float64))
        std = float(np.std(inside, dtype=np.float64))
        if not std > 1e-12 * max(1.0, abs(mean)):
            raise DataError(
                f"{case.id}: constant intensity {mean:g} inside the brain mask, cannot standardise",
                path=case.native.image_path,
            )
        return case.with_image((image - np.float32(mean)) * np.float32(1.0 / std))



@dataclass
class HistogramMatching(PreprocessStep):
    """Match every image's histogram to one training subject's (paper §4.1.2, 7 match points).

    SimpleITK ``HistogramMatchingImageFilter`` with ``levels`` histogram bins and ``match_points``
    quantiles; with ``threshold_at_mean`` only voxels above each image's mean intensity enter the
    histograms (the usual way to ignore the background). The reference is chosen at ``fit`` time among
    the training cases: the first by id (``reference="first"``) or the named one. Voxels outside the
    brain mask are set to 0 afterwards. Put it before standardisation.
    """

    reference: str = "first"
    levels: int = 256
    match_points: int = 7
    threshold_at_mean: bool = True
    name: ClassVar[str] = "histmatch"
    stateful: ClassVar[bool] = True
    _reference_id: str | None = field(default=None, init=False, repr=False)
    _reference_image: Any = field(default=None, init=False, repr=False)
    _reference_sha256: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reference, str) or not self.reference:
            raise self._config_error("reference", self.reference, '"first" or a training subject id')
        for setting in ("levels", "match_points"):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise self._config_error(setting, value, "a positive integer")
        if not isinstance(self.threshold_at_mean, bool | np.bool_):
            raise self._config_error("threshold_at_mean", self.threshold_at_mean, "true or false")

    def fit(self, cases: Sequence[PreparedCase]) -> None:
        """Pick the reference among the ``train`` cases (other splits are ignored)."""
        train = {c.id: c for c in cases if c.split == "train"}
        if not train:
            raise ConfigError("histmatch: no training case to choose the histogram reference from")
        if self.reference == "first":
            chosen = train[min(train)]
        elif self.reference in train:
            chosen = train[self.reference]
        else:
            raise ConfigError(
                f"histmatch reference={self.reference!r} is not a training subject; available: "
                f"{', '.join(sorted(train))}",
                fix='set preprocess histmatch reference to one of them, or "first"',
            )
        array = np.asarray(chosen.image.array, dtype=np.float32)
        self._reference_id = chosen.id
        self._reference_sha256 = array_sha256(array)
        self._reference_image = sitk.GetImageFromArray(np.ascontiguousarray(array))

    def state(self) -> dict[str, Any]:
        if self._reference_id is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        return {"reference_id": self._reference_id, "reference_sha256": self._reference_sha256}

    def state_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The reference image (float32 ``[x, y, z]``) the histograms are matched to."""
        if self._reference_image is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        return {"reference": sitk.GetArrayFromImage(self._reference_image)}

    def restore(self, state: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Use a saved reference image again; DataError when it is missing or not the one ``state`` names."""
        reference = arrays.get("reference")
        if reference is None or reference.ndim != 3:
            raise DataError("histmatch: the saved reference image is missing or not 3D")
        array = np.ascontiguousarray(reference, dtype=np.float32)
        if array_sha256(array) != state.get("reference_sha256"):
            raise DataError(f"histmatch: the saved reference image of {state.get('reference_id')!r} does not match "
                            "its recorded sha256 (corrupt model)")
        self._reference_id = str(state.get("reference_id"))
        self._reference_sha256 = str(state["reference_sha256"])
        self._reference_image = sitk.GetImageFromArray(array)

    def apply(self, case: PreparedCase) -> PreparedCase:
        if self._reference_image is None:
            raise RuntimeError("histmatch step is not fitted: call Pipeline.fit on the training cases first")
        matcher = sitk.HistogramMatchingImageFilter()
        matcher.SetNumberOfHistogramLevels(int(self.levels))
        matcher.SetNumberOfMatchPoints(int(self.match_points))
        matcher.SetThresholdAtMeanIntensity(bool(self.threshold_at_mean))
        # Histogram matching is voxel-wise, so geometry is irrelevant: hand SimpleITK the [x, y, z] array as
        # is (it reads it as [z, y, x]) and skip two transposed copies.
        source = sitk.GetImageFromArray(np.ascontiguousarray(case.image.array, dtype=np.float32))
        matched = sitk.GetArrayFromImage(matcher.Execute(source, self._reference_image))
        matched[~case.mask] = 0.0
        return case.with_image(matched)
