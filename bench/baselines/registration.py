"""Intensity-based 3D registration helpers (SimpleITK) for the atlas baselines.

Pipeline of :func:`register` (fixed = subject, moving = atlas/template; the result maps fixed physical points to
moving physical points, i.e. it is what ``sitk.Resample`` needs to bring moving data onto the fixed grid):

1. Both images are cropped to their foreground (non-zero voxels) plus a margin and resampled, with Gaussian
   anti-aliasing, onto an isotropic working grid (``working_spacing_mm``): registration cost no longer depends
   on the native resolution.
2. Initialisation: ``CenteredTransformInitializer`` (MOMENTS: centres of mass).
3. Similarity, then affine: Mattes mutual information, random sampling (fixed seed), multi-resolution
   (``affine_shrink``), regular-step gradient descent with scales from physical shift. (A 12-parameter affine
   started directly from the moments alignment stalled before fixing the rotation on test phantoms.)
4. Deformable (``deformable``): ``"demons"`` (default) = fast symmetric forces demons on histogram-matched
   images, multi-resolution, with light displacement-field smoothing (``demons_sigma_vox``); ``"bspline"`` =
   B-spline free-form deformation on Mattes MI with L-BFGS-B; ``"none"`` = affine only. On IBSR, demons
   with little smoothing gave the best Dice per second: B-spline (40 mm mesh) was ~10× slower and worse than
   demons, and smoothing the field more (σ 1.5 voxels) cost 0.04–0.07 Dice.

Every SimpleITK failure and every non-finite metric becomes a :class:`bench.errors.BenchError` naming the
pair and the stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import SimpleITK as sitk

from bench.errors import BenchError, ConfigError

DEFORMABLE_KINDS = ("demons", "bspline", "none")


@dataclass(frozen=True)
class RegistrationSpec:
    """Every registration setting, explicit.

    Attributes:
        working_spacing_mm: Isotropic voxel size of the grid registration runs on.
        margin_mm: Margin kept around the foreground bounding box when cropping.
        affine_shrink: Shrink factors of the affine multi-resolution pyramid (on the working grid).
        affine_sigmas_vox: Gaussian smoothing per affine level, in working-grid voxels.
        affine_iterations: Maximum optimizer iterations per affine level.
        sampling_fraction: Fraction of fixed voxels sampled (randomly) for the MI metric.
        histogram_bins: Mattes MI histogram bins.
        deformable: ``"demons"``, ``"bspline"`` or ``"none"``.
        demons_shrink: Shrink factors of the demons pyramid (on the working grid).
        demons_iterations: Demons iterations per level (same length as ``demons_shrink``).
        demons_sigma_vox: Standard deviation of the displacement-field smoothing, in voxels of each level.
        bspline_mesh_mm: B-spline control-point spacing in mm.
        bspline_iterations: L-BFGS-B iterations for the B-spline stage.
        seed: Seed of the random metric sampling (registration is repeatable for a given seed; measured equal
            with 1 and 2 threads).
        threads: SimpleITK threads used while registering and warping.
    """

    working_spacing_mm: float = 2.0
    margin_mm: float = 10.0
    affine_shrink: tuple[int, ...] = (4, 2, 1)
    affine_sigmas_vox: tuple[float, ...] = (2.0, 1.0, 0.0)
    affine_iterations: int = 200
    sampling_fraction: float = 0.2
    histogram_bins: int = 32
    deformable: str = "demons"
    demons_shrink: tuple[int, ...] = (2, 1)
    demons_iterations: tuple[int, ...] = (60, 60)
    demons_sigma_vox: float = 0.5
    bspline_mesh_mm: float = 40.0
    bspline_iterations: int = 60
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("affine_shrink", "affine_sigmas_vox", "demons_shrink", "demons_iterations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _require(
            self.working_spacing_mm > 0,
            "working_spacing_mm",
            self.working_spacing_mm,
            "a positive size in mm",
        )
        _require(self.margin_mm >= 0, "margin_mm", self.margin_mm, "a non-negative margin in mm")
        _require(
            len(self.affine_shrink) == len(self.affine_sigmas_vox) > 0 and min(self.affine_shrink) >= 1,
            "affine_shrink/affine_sigmas_vox",
            (self.affine_shrink, self.affine_sigmas_vox),
            "two lists of the same length, shrink factors >= 1",
        )
        _require(self.affine_iterations > 0, "affine_iterations", self.affine_iterations, "a positive count")
        _require(
            0 < self.sampling_fraction <= 1, "sampling_fraction", self.sampling_fraction, "a value in (0, 1]"
        )
        _require(self.histogram_bins >= 8, "histogram_bins", self.histogram_bins, "at least 8")
        _require(
            self.deformable in DEFORMABLE_KINDS, "deformable", self.deformable, f"one of {DEFORMABLE_KINDS}"
        )
        _require(
            len(self.demons_shrink) == len(self.demons_iterations) > 0 and min(self.demons_shrink) >= 1,
            "demons_shrink/demons_iterations",
            (self.demons_shrink, self.demons_iterations),
            "two lists of the same length, shrink factors >= 1",
        )
        _require(self.demons_sigma_vox > 0, "demons_sigma_vox", self.demons_sigma_vox, "a positive value")
        _require(
            self.bspline_mesh_mm > 0, "bspline_mesh_mm", self.bspline_mesh_mm, "a positive spacing in mm"
        )
        _require(
            self.bspline_iterations > 0, "bspline_iterations", self.bspline_iterations, "a positive count"
        )
        _require(self.threads >= 1, "threads", self.threads, "at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _require(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"registration setting {name}={value!r} is invalid; expected {expected}")


@contextmanager
def sitk_threads(n: int) -> Iterator[None]:
    """Temporarily set SimpleITK's global default thread count."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


# --------------------------------------------------------------------------------------------- grids


def foreground_bounds(
    image: sitk.Image, margin_mm: float, threshold: float = 0.0
) -> tuple[list[int], list[int]]:
    """Index bounds ``(lo, hi)`` (x, y, z; ``hi`` exclusive) of voxels ``> threshold`` plus ``margin_mm``.

    The whole image when nothing is above ``threshold``.
    """
    array = sitk.GetArrayViewFromImage(image)  # [z, y, x]
    size = list(image.GetSize())
    nonzero = np.nonzero(array > threshold)
    if nonzero[0].size == 0:
        return [0, 0, 0], size
    spacing = image.GetSpacing()
    lo, hi = [], []
    for axis in range(3):  # x, y, z
        found = nonzero[2 - axis]
        pad = math.ceil(margin_mm / spacing[axis])
        lo.append(max(int(found.min()) - pad, 0))
        hi.append(min(int(found.max()) + pad + 1, size[axis]))
    return lo, hi


def crop_to_foreground(image: sitk.Image, margin_mm: float, threshold: float = 0.0) -> sitk.Image:
    """The sub-image covering voxels ``> threshold`` plus ``margin_mm`` (physical geometry kept)."""
    lo, hi = foreground_bounds(image, margin_mm, threshold)
    return image[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


def isotropic_grid(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """An empty float image covering the same box as ``image`` with isotropic ``spacing_mm`` voxels."""
    old_spacing = np.asarray(image.GetSpacing())
    extent = old_spacing * np.asarray(image.GetSize())
    size = [max(math.ceil(e / spacing_mm), 1) for e in extent]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    # keep the outer corner of the box: voxel centres move by half the spacing difference
    corner = np.asarray(image.GetOrigin()) - direction @ (old_spacing / 2)
    origin = corner + direction @ np.full(3, spacing_mm / 2)
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetOrigin(origin.tolist())
    grid.SetDirection(image.GetDirection())
    return grid


def to_working_grid(image: sitk.Image, spec: RegistrationSpec) -> sitk.Image:
    """Crop to the foreground, anti-alias and resample to the isotropic working grid (float32)."""
    image = sitk.Cast(crop_to_foreground(image, spec.margin_mm), sitk.sitkFloat32)
    grid = isotropic_grid(image, spec.working_spacing_mm)
    sigmas = [0.4 * math.sqrt(max(spec.working_spacing_mm**2 - s**2, 0.0)) for s in image.GetSpacing()]
    if max(sigmas) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigmas])
    return sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def warp(
    moving: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform,
    *,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> sitk.Image:
    """Resample ``moving`` (scalar or vector) onto ``reference``'s grid through ``transform``."""
    return sitk.Resample(moving, reference, transform, interpolator, default, moving.GetPixelID())


def histogram_match(moving: sitk.Image, fixed: sitk.Image) -> sitk.Image:
    """``moving`` with its intensity histogram matched to ``fixed`` (zero backgrounds ignored)."""
    matcher = sitk.HistogramMatchingImageFilter()
    matcher.SetNumberOfHistogramLevels(256)
    matcher.SetNumberOfMatchPoints(15)
    matcher.ThresholdAtMeanIntensityOn()
    return matcher.Execute(sitk.Cast(moving, sitk.sitkFloat32), sitk.Cast(fixed, sitk.sitkFloat32))


# ---------------------------------------------------------------------------------------- registration


def register(
    fixed: sitk.Image, moving: sitk.Image, spec: RegistrationSpec, *, label: str = "fixed <- moving"
) -> sitk.Transform:
    """Register ``moving`` to ``fixed`` (affine + optional deformable); returns the fixed→moving transform.

    Args:
        fixed: The subject image (any grid; background 0).
        moving: The atlas/template image (any grid; background 0).
        spec: Registration settings.
        label: Names the pair in error messages, e.g. ``"IBSR_04 <- MNI152"``.

    Raises:
        BenchError: SimpleITK failed or the metric is not finite (message names ``label`` and the stage).
    """
    with sitk_threads(spec.threads):
        fixed_w = _prepare(fixed, spec, "fixed", label)
        moving_w = _prepare(moving, spec, "moving", label)
        affine = affine_register(fixed_w, moving_w, spec, label=label)
        if spec.deformable == "none":
            return affine
        if spec.deformable == "bspline":
            local: sitk.Transform = bspline_register(fixed_w, moving_w, affine, spec, label=label)
        else:
            moved = warp(moving_w, fixed_w, affine)
            local = demons_register(fixed_w, moved, spec, label=label)
        return sitk.CompositeTransform([affine, local])  # applied right to left: affine(local(x))


def _prepare(image: sitk.Image, spec: RegistrationSpec, role: str, label: str) -> sitk.Image:
    """The working-grid image, after refusing inputs that would make registration fail or hang."""
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        raise BenchError(f"registration of {label}: the {role} image holds NaN or infinite values")
    if not (array > 0).any():
        raise BenchError(
            f"registration of {label}: the {role} image has no positive voxel (nothing to align)"
        )
    try:
        return to_working_grid(image, spec)
    except RuntimeError as exc:
        raise BenchError(
            f"preparing the {role} image of {label} for registration failed in SimpleITK: {_first_line(exc)}",
            fix=f"the image is probably too small for working_spacing_mm={spec.working_spacing_mm}",
        ) from exc


def _registration_method(spec: RegistrationSpec) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=spec.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads a seed of 0 as sitkWallClock (a new random sample every run): shift by one.
    method.SetMetricSamplingPercentage(spec.sampling_fraction, spec.seed + 1)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def _execute(
    method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image, stage: str, label: str
) -> Any:
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as exc:
        raise BenchError(f"{stage} registration of {label} failed in SimpleITK: {_first_line(exc)}") from exc
    metric = method.GetMetricValue()
    if not math.isfinite(metric):
        raise BenchError(
            f"{stage} registration of {label} diverged (metric {metric})",
            fix="check that both images show a brain with a zero background, or change the registration settings",
        )
    return result


def affine_register(
    fixed: sitk.Image, moving: sitk.Image, spec: RegistrationSpec, *, label: str = "fixed <- moving"
) -> sitk.AffineTransform:
    """Moments initialisation, then similarity, then affine registration (Mattes MI, multi-resolution).

    The similarity stage (rotation, translation, isotropic scale) comes first because a 12-parameter affine
    started from the moments alignment tends to stall before it has fixed the rotation.
    """
    try:
        similarity = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    except RuntimeError as exc:
        raise BenchError(f"initial alignment of {label} failed in SimpleITK: {_first_line(exc)}") from exc
    _run_linear(fixed, moving, similarity, spec, "similarity", label)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    _run_linear(fixed, moving, affine, spec, "affine", label)
    return affine


def _run_linear(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    spec: RegistrationSpec,
    stage: str,
    label: str,
) -> None:
    """Optimise ``transform`` in place (regular-step gradient descent, scales from physical shift)."""
    method = _registration_method(spec)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=spec.affine_iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(spec.affine_shrink))
    method.SetSmoothingSigmasPerLevel(list(spec.affine_sigmas_vox))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    _execute(method, fixed, moving, stage, label)


def bspline_register(
    fixed: sitk.Image,
    moving: sitk.Image,
    affine: sitk.Transform,
    spec: RegistrationSpec,
    *,
    label: str = "fixed <- moving",
) -> sitk.BSplineTransform:
    """B-spline FFD on top of ``affine`` (Mattes MI, L-BFGS-B, coarse-to-fine)."""
    extent = np.asarray(fixed.GetSpacing()) * np.asarray(fixed.GetSize())
    mesh = [max(round(e / spec.bspline_mesh_mm), 1) for e in extent]
    initial = sitk.BSplineTransformInitializer(fixed, mesh)
    method = _registration_method(spec)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=spec.bspline_iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * spec.bspline_iterations,
        costFunctionConvergenceFactor=1e7,
    )
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransform(initial, inPlace=True)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    _execute(method, fixed, moving, "B-spline", label)
    return initial


def demons_register(
    fixed: sitk.Image, moving: sitk.Image, spec: RegistrationSpec, *, label: str = "fixed <- moving"
) -> sitk.DisplacementFieldTransform:
    """Multi-resolution fast symmetric forces demons; ``moving`` must already be on ``fixed``'s grid.

    The moving image is histogram-matched to the fixed one first (demons assumes equal intensities).
    """
    matched = histogram_match(moving, fixed)
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    field: sitk.Image | None = None
    for shrink, iterations in zip(spec.demons_shrink, spec.demons_iterations, strict=True):
        level_fixed = _shrink(fixed, shrink)
        level_moving = warp(matched, level_fixed, sitk.Transform())
        if field is None:
            initial = sitk.Image(level_fixed.GetSize(), sitk.sitkVectorFloat64, 3)
            initial.CopyInformation(level_fixed)
        else:
            initial = sitk.Resample(
                field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID()
            )
        demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(iterations))
        demons.SetSmoothDisplacementField(True)
        demons.SetStandardDeviations(spec.demons_sigma_vox)
        try:
            field = demons.Execute(level_fixed, level_moving, initial)
        except RuntimeError as exc:
            raise BenchError(
                f"demons registration of {label} failed in SimpleITK: {_first_line(exc)}"
            ) from exc
        if not math.isfinite(demons.GetMetric()):
            raise BenchError(f"demons registration of {label} diverged (metric {demons.GetMetric()})")
    assert field is not None
    if not np.isfinite(sitk.GetArrayViewFromImage(field)).all():
        raise BenchError(f"demons registration of {label} produced a non-finite displacement field")
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def _shrink(image: sitk.Image, factor: int) -> sitk.Image:
    if factor == 1:
        return image
    smoothed = sitk.SmoothingRecursiveGaussian(image, 0.5 * factor * image.GetSpacing()[0])
    return sitk.Shrink(smoothed, [factor] * 3)


def _first_line(exc: BaseException) -> str:
    """The informative line of a SimpleITK exception (its ``ITK ERROR`` / ``Description`` line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next(
        (line for line in lines if line.startswith(("ITK ERROR", "Description", "sitk::ERROR"))),
        lines[-1] if lines else type(exc).__name__,
    )
    return detail[:300]


# --------------------------------------------------------------------------------------- conversions


def vector_image(channels_xyz: np.ndarray, like: sitk.Image | Any) -> sitk.Image:
    """A float32 vector image from ``channels[C, X, Y, Z]`` with the geometry of ``like``.

    ``like`` is a SimpleITK image or a ``bench.io.Volume``.
    """
    array = np.moveaxis(np.asarray(channels_xyz, np.float32), 0, -1).transpose(2, 1, 0, 3)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=True)
    if isinstance(like, sitk.Image):
        image.CopyInformation(like)
    else:
        image.SetSpacing([float(s) for s in like.spacing_mm])
        image.SetOrigin([float(o) for o in like.origin_mm])
        image.SetDirection([float(d) for d in like.direction])
    return image


def vector_to_array(image: sitk.Image) -> np.ndarray:
    """``float32[C, X, Y, Z]`` from a vector image (SimpleITK arrays are ``[z, y, x, C]``)."""
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 3:
        array = array[..., None]
    return np.ascontiguousarray(array.transpose(3, 2, 1, 0), dtype=np.float32)


def ras_to_sitk(array_xyz: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """A float32 SimpleITK image from a nibabel-style array ``[x, y, z]`` and its RAS voxel-to-world affine.

    NIfTI/nibabel world coordinates are RAS, ITK's are LPS: the first two rows of the affine change sign.
    """
    affine = np.asarray(affine_ras, dtype=float).copy()
    affine[:2] *= -1.0
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array_xyz, np.float32).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    image.SetDirection((linear / spacing).ravel().tolist())
    return image
