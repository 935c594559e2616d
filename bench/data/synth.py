"""The built-in synthetic cohort: IBSR-like T1 volumes with known labels, made from the MNI152 template.

Every subject is the MNI152 2009 T1 template with its GM/WM probability maps and brain mask (shipped in
nilearn, no download), deformed by a random smooth transform (small scaling, rotation, shift and a
coarse random displacement field of a few mm), then sampled on an IBSR grid: 256×128×256 voxels, axis 1
the 1.5 mm anterior-posterior slice axis, in-plane spacing of the subject's IBSR spacing group, the
IBSR header orientation (direction diag(-1, -1, 1), RAS voxel order like IBSR and MNI) and the brain in
the centre. The label is the argmax over (CSF, GM, WM) probabilities inside the deformed brain mask
(CSF = mask - GM - WM, clipped to [0, 1]), background elsewhere. Intensities are the skull-stripped
template with a random global scale (IBSR-like maxima of ~80-310, occasionally ~1000), gamma, a smooth
multiplicative bias field and Rician noise; int16 with background exactly 0.

Subjects carry the 18 IBSR ids with their real course folder and spacing group, in an interleaved order
(:data:`SUBJECT_ORDER`) so that the first N subjects already cover every split of the ``paper`` split
(N >= 7). Test_Set subjects are written without a label file, like the real ones.

:func:`write_nnunet_cohort` writes the same subjects as an nnU-Net v2 raw dataset (labelled subjects in
imagesTr/labelsTr, Test_Set subjects in imagesTs), optionally with a second, FLAIR-like input channel and a
fifth class ``lesion`` (stored value 10): small bright blobs inside the WM (see :func:`nnunet_subject`).

:func:`phantom_case` is a much smaller in-memory subject (nested ellipsoids) for tests and smoke runs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.data.cohort import Case
from bench.data.discovery import IBSR18, IbsrSubject
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.data.nnunet_write import check_output, replace_folder, write_dataset
from bench.errors import ConfigError
from bench.io import Volume, write_text_atomic, write_volume
from bench.types import FloatArray, Shape3, Spacing

FULL_SHAPE: Shape3 = (256, 128, 256)
SUBJECT_ORDER: tuple[str, ...] = tuple(
    f"IBSR_{n:02d}" for n in (1, 7, 16, 11, 3, 12, 2, 8, 13, 18, 4, 14, 10, 5, 17, 6, 9, 15)
)
"""IBSR ids in generation order: the first 7 already hold paper-split train/val/test/predict subjects."""

IBSR_DIRECTION: tuple[float, ...] = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
"""Direction cosines of the IBSR18 headers (SimpleITK/LPS convention: voxel axes point R, A, S)."""

MANIFEST = "synth.json"
BRAINSTEM_CUT_MNI_Z_MM = -55.0
"""The template mask runs down the brainstem to the edge of the field of view; IBSR stops near the
bottom of the cerebellum, so the mask is cut below this MNI z."""

_DISPLACEMENT_CONTROL_POINTS = 6
_DISPLACEMENT_SIGMA_MM = 4.0
_BIAS_CONTROL_POINTS = 4


# ------------------------------------------------------------------------------------------ subjects


def subject_info(subject: int | str) -> tuple[int, IbsrSubject]:
    """Index in :data:`SUBJECT_ORDER` and IBSR facts for a subject given by index or id."""
    if isinstance(subject, str):
        if subject not in SUBJECT_ORDER:
            raise ConfigError(f"unknown synthetic subject {subject!r}", fix="use IBSR_01 … IBSR_18")
        index = SUBJECT_ORDER.index(subject)
    else:
        index = int(subject)
        if not 0 <= index < len(SUBJECT_ORDER):
            raise ConfigError(f"synthetic subject index {index} is outside 0..{len(SUBJECT_ORDER) - 1}")
    return index, IBSR18[SUBJECT_ORDER[index]]


def _check_params(seed: int, shape: Sequence[int], spacing_scale: float) -> Shape3:
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 3 or any(int(s) != s or s < 8 for s in shape):
        raise ConfigError(f"shape must be three integers >= 8, got {tuple(shape)}")
    if not (math.isfinite(spacing_scale) and spacing_scale > 0):
        raise ConfigError(f"spacing scale must be a positive number, got {spacing_scale!r}")
    x, y, z = (int(s) for s in shape)
    return x, y, z


# ----------------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class _Templates:
    t1: FloatArray  # normalised: brain 99.9th percentile = 1
    gm: FloatArray
    wm: FloatArray
    mask: FloatArray  # 0/1, brainstem cut
    vox_from_mm: np.ndarray  # 3×4 inverse affine (RAS mm -> template voxel)
    centre_mm: np.ndarray  # centre of the brain bounding box
    half_extent_mm: np.ndarray


@functools.lru_cache(maxsize=1)
def _templates() -> _Templates:
    """Load the nilearn MNI152 maps once per process (all shipped with nilearn, 1 mm, RAS)."""
    from nilearn import datasets  # slow import: only when a subject is generated

    t1_img = datasets.load_mni152_template(resolution=1)
    arrays = [
        np.asarray(img.dataobj, dtype=np.float32)
        for img in (
            t1_img,
            datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1),
            datasets.load_mni152_brain_mask(resolution=1),
        )
    ]
    t1, gm, wm, mask = arrays
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    inverse = np.linalg.inv(affine)[:3]
    cut_z = int(np.ceil((inverse @ [0.0, 0.0, BRAINSTEM_CUT_MNI_Z_MM, 1.0])[2]))
    mask = (mask > 0).astype(np.float32)
    mask[:, :, : max(cut_z, 0)] = 0.0
    brain = mask > 0
    t1 = np.where(brain, t1 / np.percentile(t1[brain], 99.9), 0.0).astype(np.float32)
    corners = np.argwhere(brain)
    low_mm = affine[:3, :3] @ corners.min(0) + affine[:3, 3]
    high_mm = affine[:3, :3] @ corners.max(0) + affine[:3, 3]
    lo, hi = np.minimum(low_mm, high_mm), np.maximum(low_mm, high_mm)
    return _Templates(t1, gm * mask, wm * mask, mask, inverse, (lo + hi) / 2, (hi - lo) / 2)


# ------------------------------------------------------------------------------------ random fields


def _rbf_weights(positions: np.ndarray, n_control: int) -> np.ndarray:
    """Row-normalised Gaussian weights from control points evenly spread over [0, 1]."""
    centres = np.linspace(0.0, 1.0, n_control)
    sigma = 1.0 / (n_control - 1)
    weights = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(coarse: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate a coarse random grid (``[..., cx, cy, cz]``) smoothly at the given normalised positions."""
    wx, wy, wz = (_rbf_weights(p, n) for p, n in zip(positions, coarse.shape[-3:], strict=True))
    field = np.einsum("...abc,xa->...xbc", coarse.astype(np.float32), wx)
    field = np.einsum("...xbc,yb->...xyc", field, wy)
    return np.einsum("...xyc,zc->...xyz", field, wz)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class _Draw:
    """Every random quantity of one subject, drawn in a fixed order."""

    size: np.ndarray
    angles_deg: np.ndarray
    shift_mm: np.ndarray
    displacement: np.ndarray
    gamma: float
    peak: float
    bias: np.ndarray
    noise_fraction: float

    @classmethod
    def make(cls, rng: np.random.Generator) -> _Draw:
        size = rng.uniform(0.93, 1.02) * (1.0 + rng.uniform(-0.02, 0.02, 3))
        angles = rng.uniform(-3.0, 3.0, 3)
        shift = rng.uniform(-3.0, 3.0, 3)
        n = _DISPLACEMENT_CONTROL_POINTS
        displacement = rng.normal(0.0, _DISPLACEMENT_SIGMA_MM, (3, n, n, n))
        gamma = rng.uniform(0.8, 1.25)
        bright = rng.random() < 0.08
        peak = rng.uniform(800.0, 1100.0) if bright else rng.uniform(65.0, 260.0)
        b = _BIAS_CONTROL_POINTS
        bias = rng.normal(0.0, rng.uniform(0.04, 0.12), (b, b, b))
        noise = rng.uniform(0.01, 0.03)
        return cls(size, angles, shift, displacement, float(gamma), float(peak), bias, float(noise))


# ---------------------------------------------------------------------------------------- generation


def _crop_box(shape: Shape3, spacing: np.ndarray, tpl: _Templates) -> tuple[slice, slice, slice]:
    """Output voxels that can hold brain (generous: covers the largest size, rotation and displacement)."""
    centre_idx = (np.asarray(shape) - 1) / 2.0
    half_vox = (tpl.half_extent_mm * 1.12 + 12.0) / spacing
    low = np.clip(np.floor(centre_idx - half_vox), 0, None).astype(int)
    high = np.minimum(np.ceil(centre_idx + half_vox) + 1, shape).astype(int)
    return slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2])


def _template_coordinates(
    box: tuple[slice, slice, slice], shape: Shape3, spacing: np.ndarray, draw: _Draw, tpl: _Templates
) -> np.ndarray:
    """Template voxel coordinates (``[3, bx, by, bz]``) sampled by each output voxel of the box."""
    centre_idx = (np.asarray(shape) - 1) / 2.0
    axes = [np.arange(s.start, s.stop, dtype=np.float32) for s in box]
    normalised = [a / max(n - 1, 1) for a, n in zip(axes, shape, strict=True)]
    offsets = [((a - c) * d).astype(np.float32) for a, c, d in zip(axes, centre_idx, spacing, strict=True)]
    # linear part: template mm = M @ output offset (+ translation), then mm -> template voxel
    matrix = tpl.vox_from_mm[:, :3] @ _rotation(draw.angles_deg) @ np.diag(1.0 / draw.size)
    translation = tpl.vox_from_mm[:, :3] @ (tpl.centre_mm + draw.shift_mm) + tpl.vox_from_mm[:, 3]
    displacement = _smooth_field(draw.displacement, normalised)  # mm, [3, bx, by, bz]
    coords = np.empty((3, *displacement.shape[1:]), dtype=np.float32)
    for row in range(3):
        m = matrix[row].astype(np.float32)
        coords[row] = (
            m[0] * offsets[0][:, None, None] + m[1] * offsets[1][None, :, None] + m[2] * offsets[2][None, None, :]
        )
        coords[row] += translation[row]
        coords[row] += np.tensordot(tpl.vox_from_mm[row, :3].astype(np.float32), displacement, axes=1)
    return coords


def _intensities(t1: np.ndarray, bias_log: np.ndarray, draw: _Draw, rng: np.random.Generator) -> np.ndarray:
    """int16 intensities of the brain voxels from normalised template values (1D arrays)."""
    clean = draw.peak * np.clip(t1, 0.0, None) ** draw.gamma * np.exp(bias_log)
    sigma = draw.noise_fraction * draw.peak
    noise = rng.standard_normal((2, t1.size), dtype=np.float32) * sigma
    noisy = np.rint(np.sqrt((clean + noise[0]) ** 2 + noise[1] ** 2))
    return np.clip(noisy, 0, np.iinfo(np.int16).max).astype(np.int16)


def generate_subject(
    subject: int | str,
    seed: int,
    shape: Sequence[int] = FULL_SHAPE,
    spacing_scale: float = 1.0,
) -> tuple[Volume, Volume]:
    """One synthetic subject: ``(image int16, label uint8)`` on an IBSR-like grid.

    Args:
        subject: Index into :data:`SUBJECT_ORDER` or an IBSR id (sets the spacing group).
        seed: Cohort seed; the subject's random stream is seeded by ``(seed, index)``.
        shape: Grid size (default IBSR's 256×128×256).
        spacing_scale: Spacing = IBSR spacing × this (e.g. ``shape=(48, 32, 48), spacing_scale=4.5`` is a
            tiny volume that still covers the brain).

    Returns:
        The image and its label map on the same grid.
    """
    grid = _check_params(seed, shape, spacing_scale)
    index, info = subject_info(subject)
    rng = np.random.default_rng([int(seed), index])
    draw = _Draw.make(rng)
    tpl = _templates()
    spacing = np.asarray(info.spacing_mm) * spacing_scale
    box = _crop_box(grid, spacing, tpl)
    coords = _template_coordinates(box, grid, spacing, draw, tpl)
    brain = ndimage.map_coordinates(tpl.mask, coords, order=1, mode="constant", cval=0.0, output=np.float32) >= 0.5
    points = coords[:, brain]  # only brain voxels need tissue maps and intensities
    mask, gm, wm, t1 = (
        ndimage.map_coordinates(a, points, order=1, mode="constant", cval=0.0, output=np.float32)
        for a in (tpl.mask, tpl.gm, tpl.wm, tpl.t1)
    )
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    tissue = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1).astype(np.uint8)
    positions = [np.arange(s.start, s.stop) / max(n - 1, 1) for s, n in zip(box, grid, strict=True)]
    bias_log = _smooth_field(draw.bias, positions)[brain]
    image = np.zeros(grid, dtype=np.int16)
    label = np.zeros(grid, dtype=np.uint8)
    image[box][brain] = _intensities(t1, bias_log, draw, rng)
    label[box][brain] = tissue
    spacing_mm: Spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    origin: tuple[float, float, float] = (spacing_mm[0] * (grid[0] - 1), 0.0, 0.0)
    return (
        Volume(image, spacing_mm, origin, IBSR_DIRECTION),
        Volume(label, spacing_mm, origin, IBSR_DIRECTION),
    )


# ------------------------------------------------------------------------------------------- writing


def _subject_ids(subjects: int | Sequence[str]) -> list[str]:
    if isinstance(subjects, int):
        if not 1 <= subjects <= len(SUBJECT_ORDER):
            raise ConfigError(
                f"--subjects must be between 1 and {len(SUBJECT_ORDER)}, got {subjects}",
                fix="the synthetic cohort has the 18 IBSR subject ids",
            )
        return list(SUBJECT_ORDER[:subjects])
    ids = list(subjects)
    for subject_id in ids:
        subject_info(subject_id)
    if len(set(ids)) != len(ids) or not ids:
        raise ConfigError(f"subjects must be distinct and non-empty, got {ids}")
    return ids


def _read_manifest(out: Path) -> dict[str, object] | None:
    """The manifest of a previous ``bench synth`` run in ``out``; refuse a non-empty foreign folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError("--out exists and is not a folder", path=out, fix="choose a new folder")
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            return dict(json.loads(manifest.read_text()))
        except (ValueError, TypeError):
            return {}
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"--out is not empty and holds no {MANIFEST} from an earlier `bench synth`",
            path=out,
            fix="choose an empty or new folder (synth never overwrites foreign files)",
        )
    return None


def _write_manifest(out: Path, payload: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out / MANIFEST)


def _remove_stale(out: Path, previous: dict[str, object] | None, keep: set[Path]) -> None:
    """Delete files an earlier synth run wrote that the new cohort does not contain."""
    old_files = previous.get("files", []) if previous else []
    for name in old_files if isinstance(old_files, list) else []:
        path = (out / str(name)).resolve()
        if path in keep or out.resolve() not in path.parents:
            continue
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            if folder != out.resolve() and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def write_cohort(
    out: str | Path,
    subjects: int | Sequence[str],
    seed: int,
    shape: Sequence[int] = FULL_SHAPE,
    spacing_scale: float = 1.0,
) -> list[Path]:
    """Write synthetic subjects in the course layout with IBSR file names.

    ``out/<folder>/<id>/<id>.nii.gz`` (+ ``<id>_seg.nii.gz`` except in ``Test_Set``). Writing the same
    cohort again gives identical files; files of an earlier, larger synthetic cohort in ``out`` are
    removed; a non-empty folder not written by this function is refused.

    Args:
        out: Output dataset root.
        subjects: How many subjects (the first N of :data:`SUBJECT_ORDER`) or explicit IBSR ids.
        seed, shape, spacing_scale: See :func:`generate_subject`.

    Returns:
        The paths written (images and labels).
    """
    out = Path(out)
    ids = _subject_ids(subjects)
    grid = _check_params(seed, shape, spacing_scale)
    previous = _read_manifest(out)
    params: dict[str, object] = {
        "generator": "bench.synth",
        "seed": int(seed),
        "subjects": ids,
        "shape": list(grid),
        "spacing_scale": float(spacing_scale),
    }
    _write_manifest(out, {**params, "complete": False, "files": (previous or {}).get("files", [])})
    written: list[Path] = []
    for subject_id in ids:
        _, info = subject_info(subject_id)
        image, label = generate_subject(subject_id, seed, grid, spacing_scale)
        folder = out / info.folder / subject_id
        written.append(write_volume(image, folder / f"{subject_id}.nii.gz"))
        if info.folder != "Test_Set":
            written.append(write_volume(label, folder / f"{subject_id}_seg.nii.gz"))
    _remove_stale(out, previous, {p.resolve() for p in written})
    files = [str(p.relative_to(out)) for p in written]
    _write_manifest(out, {**params, "complete": True, "files": files})
    return written


# --------------------------------------------------------------------------------- nnU-Net: more data

LESION_VALUE = 10
LESION_LABELS = LabelSet(("background", "CSF", "GM", "WM", "lesion"), (0, 1, 2, 3, LESION_VALUE))
"""The five-class label set of ``bench synth --labels 5`` (the lesion's stored value is not contiguous)."""
CHANNEL_NAMES: tuple[str, ...] = ("T1", "FLAIR")
_LESION_RADIUS_MM = 7.0
_LESION_MIN_RADIUS_VOXELS = 2.0


def _lesions(wm: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """3 to 5 ellipsoidal blobs inside the WM (radius ~7 mm, at least 2 voxels), apart from each other."""
    radius = np.maximum(_LESION_MIN_RADIUS_VOXELS, _LESION_RADIUS_MM / spacing)
    depth = ndimage.distance_transform_edt(wm, sampling=1.0 / radius)  # 1 = a whole blob fits
    candidates = np.argwhere(depth >= min(1.0, float(depth.max())))
    lesion = np.zeros(wm.shape, dtype=bool)
    grids = np.ogrid[tuple(slice(0, n) for n in wm.shape)]
    for _ in range(int(rng.integers(3, 6))):
        if not len(candidates):
            break
        centre = candidates[rng.integers(len(candidates))]
        size = radius * rng.uniform(0.8, 1.3)
        lesion |= sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, size, strict=True)) <= 1.0
        candidates = candidates[(((candidates - centre) / radius) ** 2).sum(axis=1) > 9.0]
    return lesion & wm


def _flair(image: np.ndarray, tissue: np.ndarray, lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A FLAIR-like int16 contrast: inverted T1 (GM brighter than WM), CSF suppressed, lesions brightest,
    with its own scale, bias field and Rician noise; background exactly 0."""
    brain = tissue > 0
    t1 = image.astype(np.float32)
    t1 = np.clip(t1 / max(float(np.percentile(t1[brain], 99)), 1.0), 0.0, 1.2) if brain.any() else t1
    is_csf = (tissue == 1).astype(np.float32)
    csf = 0.5 * is_csf + 0.5 * ndimage.gaussian_filter(is_csf, 0.7)
    soft = ndimage.gaussian_filter(lesion.astype(np.float32), 0.6)
    clean = ((1.0 - 0.55 * t1) * (1.0 - 0.9 * csf)) * (1.0 - soft) + 1.15 * soft
    peak = rng.uniform(300.0, 700.0)
    positions = [np.arange(n) / max(n - 1, 1) for n in image.shape]
    bias = np.exp(_smooth_field(rng.normal(0.0, 0.08, (_BIAS_CONTROL_POINTS,) * 3), positions))
    sigma = rng.uniform(0.02, 0.04) * peak
    noise = rng.standard_normal((2, *image.shape), dtype=np.float32) * sigma
    noisy = np.rint(np.sqrt((peak * clean * bias + noise[0]) ** 2 + noise[1] ** 2))
    out = np.clip(noisy, 0, np.iinfo(np.int16).max).astype(np.int16)
    out[~brain] = 0
    return out


def _check_options(channels: int, labels: int) -> None:
    if channels not in (1, 2):
        raise ConfigError(f"--channels must be 1 or 2, got {channels!r}", fix="1: T1; 2: T1 and a FLAIR-like image")
    if labels not in (4, 5):
        raise ConfigError(f"--labels must be 4 or 5, got {labels!r}", fix="4: bg, CSF, GM, WM; 5: and lesion (10)")


def nnunet_subject(
    subject: int | str,
    seed: int,
    shape: Sequence[int] = FULL_SHAPE,
    spacing_scale: float = 1.0,
    *,
    channels: int = 1,
    labels: int = 4,
) -> tuple[list[Volume], Volume]:
    """One subject of ``bench synth --format nnunet``: its input channels and its label map (stored values).

    Channel 0 is :func:`generate_subject`'s T1 image; ``channels=2`` adds a FLAIR-like contrast. ``labels=5``
    adds the class ``lesion`` (value 10): 3-5 blobs of ~7 mm radius (at least 2 voxels) inside the WM, dark
    in the T1 (×0.7) and the brightest tissue of the FLAIR. With ``channels=1, labels=4`` the arrays are
    :func:`generate_subject`'s. The extra randomness has its own stream, seeded by ``(seed, index, 36)``.
    """
    _check_options(channels, labels)
    image, label = generate_subject(subject, seed, shape, spacing_scale)
    index, _ = subject_info(subject)
    rng = np.random.default_rng([int(seed), index, 36])
    tissue = label.array
    lesion = np.zeros(tissue.shape, dtype=bool)
    if labels == 5:
        lesion = _lesions(tissue == 3, np.asarray(image.spacing_mm), rng)
        t1 = image.array.copy()
        t1[lesion] = np.rint(t1[lesion] * 0.7).astype(np.int16)
        image = image.with_array(t1)
        stored = tissue.copy()
        stored[lesion] = LESION_VALUE
        label = label.with_array(stored)
    volumes = [image]
    if channels == 2:
        volumes.append(image.with_array(_flair(image.array, tissue, lesion, rng)))
    return volumes, label


def write_nnunet_cohort(
    out: str | Path,
    subjects: int | Sequence[str],
    seed: int,
    shape: Sequence[int] = FULL_SHAPE,
    spacing_scale: float = 1.0,
    *,
    channels: int = 1,
    labels: int = 4,
) -> list[Path]:
    """Write synthetic subjects as an nnU-Net v2 raw dataset (see :func:`nnunet_subject`).

    Labelled subjects (not Test_Set) go to ``imagesTr/IBSR_xx_000c.nii.gz`` + ``labelsTr/IBSR_xx.nii.gz``,
    Test_Set subjects to ``imagesTs/`` with their labels in ``labelsTs/`` (never trained on: what ``bench predict``
    and ``bench evaluate`` can score); dataset.json names the channels (T1[, FLAIR]) and labels. The folder is
    written whole (see :func:`bench.data.nnunet_write.replace_folder`); ``out`` may be new, empty or an
    earlier ``bench synth`` output. Deterministic for a seed.

    Returns:
        The files written (images, labels, dataset.json).
    """
    out = Path(out)
    ids = _subject_ids(subjects)
    grid = _check_params(seed, shape, spacing_scale)
    _check_options(channels, labels)
    check_output(out, MANIFEST, option="--out", writer="bench synth")

    def cases() -> Iterator[tuple[str, list[Volume], Volume | None]]:
        for subject_id in ids:
            volumes, label = nnunet_subject(subject_id, seed, grid, spacing_scale, channels=channels, labels=labels)
            yield subject_id, volumes, label

    def build(folder: Path) -> list[Path]:
        written = write_dataset(folder, cases(), name="synthetic", labels=LESION_LABELS if labels == 5 else IBSR_LABELS,
                                channel_names=CHANNEL_NAMES[:channels],
                                test_ids={i for i in ids if subject_info(i)[1].folder == "Test_Set"})
        params = {"generator": "bench.synth", "format": "nnunet", "seed": int(seed), "subjects": ids,
                  "shape": list(grid), "spacing_scale": float(spacing_scale), "channels": channels, "labels": labels,
                  "complete": True, "files": [str(p.relative_to(folder)) for p in written]}
        write_text_atomic(folder / MANIFEST, json.dumps(params, indent=2) + "\n")
        return written

    return replace_folder(out, build)


# ------------------------------------------------------------------------------------------- phantom


def phantom_case(
    shape: Sequence[int] = (32, 32, 32),
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    case_id: str = "phantom",
    split: str = "train",
) -> Case:
    """A tiny in-memory subject: nested ellipsoids (WM core, GM shell, CSF shell, background).

    Each class has a smooth intensity (CSF ~0.25, GM ~0.55, WM ~0.85) plus Gaussian noise; background is
    exactly 0. The centre and shell radii get small random offsets from ``seed``. The image is float32,
    the label uint8, and all four classes are present for any shape of at least 8 voxels per axis.
    """
    rng = np.random.default_rng(seed)
    dims = np.asarray(shape, dtype=int)
    spacing = np.asarray(spacing_mm, dtype=float)
    fov = dims * spacing
    centre = fov / 2.0 + rng.uniform(-0.03, 0.03, 3) * fov
    radii = fov / 2.0 * rng.uniform(0.95, 1.05, 3)
    axes = [(np.arange(n) + 0.5) * d for n, d in zip(dims, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    rho = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)))
    wm_edge, gm_edge, csf_edge = np.array([0.35, 0.58, 0.78]) + rng.uniform(-0.03, 0.03, 3)
    label = np.select([rho < wm_edge, rho < gm_edge, rho < csf_edge], [3, 2, 1], 0).astype(np.uint8)
    means = np.array([0.0, 0.25, 0.55, 0.85], dtype=np.float32)
    ramp = 1.0 + 0.05 * np.sin(2 * np.pi * grids[0] / fov[0] + rng.uniform(0, 2 * np.pi))
    image = means[label] * ramp + rng.normal(0.0, 0.03, tuple(dims))
    image = np.where(label > 0, image, 0.0).astype(np.float32)
    spacing_t: Spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return Case(case_id, split, Volume(image, spacing_t), Volume(label, spacing_t))
