"""Reading and writing NIfTI volumes with their geometry (SimpleITK).

A :class:`Volume` holds the voxel array indexed ``[x, y, z]`` (NIfTI voxel order, see ``bench.types``),
``spacing_mm`` along those axes, the world origin in mm and the 3×3 direction cosines (row-major, as
SimpleITK gives them). A trailing singleton axis (IBSR's ``256×128×256×1``) is dropped; a real 4D image
is refused by :func:`read_volume` and split into channels by :func:`read_channels`.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from bench.errors import DataError
from bench.types import Spacing

IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Volume:
    """A 3D image or label map with its physical geometry.

    Attributes:
        array: Voxel values indexed ``[x, y, z]``.
        spacing_mm: Voxel size in mm along the array axes.
        origin_mm: World position of voxel ``[0, 0, 0]`` in mm.
        direction: Direction cosines, 9 numbers row-major (SimpleITK convention).
    """

    array: npt.NDArray[Any]
    spacing_mm: Spacing
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=IDENTITY_DIRECTION)

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.array.shape
        return int(x), int(y), int(z)

    def with_array(self, array: npt.NDArray[Any]) -> Volume:
        """The same geometry with another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {tuple(array.shape)} differs from volume shape {self.shape}")
        return replace(self, array=array)

    def same_grid(self, other: Volume, tol_mm: float = 1e-3) -> bool:
        """Whether both volumes have the same shape and spacing (within ``tol_mm``)."""
        return self.shape == other.shape and bool(
            np.allclose(self.spacing_mm, other.spacing_mm, rtol=0.0, atol=tol_mm)
        )

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with this geometry (SimpleITK arrays are ``[z, y, x]``)."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array.transpose(2, 1, 0)))
        image.SetSpacing(tuple(float(s) for s in self.spacing_mm))
        image.SetOrigin(tuple(float(o) for o in self.origin_mm))
        image.SetDirection(tuple(float(d) for d in self.direction))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, *, source: str | Path = "<image>") -> Volume:
        """Build a volume from a SimpleITK image, dropping a trailing singleton 4th axis."""
        dim = image.GetDimension()
        if dim == 4:
            size = image.GetSize()
            if size[3] != 1:
                raise DataError(
                    f"4D image with {size[3]} volumes (size {size}); brainbench needs one 3D volume",
                    path=source,
                    fix="split the series and pass a single volume",
                )
            image = image[:, :, :, 0]
            dim = 3
        if dim != 3:
            raise DataError(f"{dim}D image (size {image.GetSize()}); a 3D volume is required", path=source)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise DataError("vector-valued image; a scalar 3D volume is required", path=source)
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        if np.iscomplexobj(array):
            raise DataError(f"complex-valued image ({image.GetPixelIDTypeAsString()}); a real-valued T1 or label "
                            "map is required", path=source, fix="save the magnitude image")
        sx, sy, sz = (float(s) for s in image.GetSpacing())
        ox, oy, oz = (float(o) for o in image.GetOrigin())
        return cls(
            array=np.ascontiguousarray(array),
            spacing_mm=(sx, sy, sz),
            origin_mm=(ox, oy, oz),
            direction=tuple(float(d) for d in image.GetDirection()),
        )


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI (or any SimpleITK-readable) 3D volume.

    Raises:
        DataError: The file is missing, empty, unreadable, corrupt, not an image, 2D or truly 4D.
    """
    path = Path(path)
    return Volume.from_sitk(_read_sitk(path), source=path)


def read_channels(path: str | Path, channels: int) -> list[Volume]:
    """Read a file holding ``channels`` input channels: a 3D volume (one channel) or a 4D image ``X×Y×Z×C``
    (the Medical Segmentation Decathlon's multi-modal images), split into ``C`` 3D volumes on one grid.

    Raises:
        DataError: As :func:`read_volume`, or the file holds another number of channels than ``channels``.
    """
    path = Path(path)
    image = _read_sitk(path)
    size = image.GetSize()
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 3 and components > 1:  # a vector image: one component per channel
        found = components
        volumes = [sitk.VectorIndexSelectionCast(image, c) for c in range(components)] if found == channels else []
    elif image.GetDimension() == 4:
        found = size[3]
        volumes = [image[:, :, :, c] for c in range(found)] if found == channels else []
    else:
        found, volumes = 1, [image]
    if found != channels:
        raise DataError(
            f"image holds {found} channel(s) (size {size}, {components} component(s) per voxel); "
            f"{channels} expected",
            path=path, fix="store one 3D volume per channel along the 4th axis, as many as dataset.json lists",
        )
    return [Volume.from_sitk(v, source=path) for v in volumes]


def _read_sitk(path: Path) -> sitk.Image:
    """Check a file (exists, readable, complete, known voxel size) and read it with SimpleITK."""
    if not path.exists():
        raise DataError("file does not exist", path=path)
    if path.is_dir():
        raise DataError("is a folder, expected an image file", path=path)
    if not os.access(path, os.R_OK):
        raise DataError("file is not readable (permission denied)", path=path)
    if path.stat().st_size == 0:
        raise DataError("file is empty", path=path)
    if path.name.endswith(".gz"):
        _check_gzip(path)
    if path.name.endswith((".nii", ".nii.gz")):
        _check_nifti_voxel_size(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()
        detail = next((line for line in reason if "rror" in line), reason[-1] if reason else "")
        raise DataError(
            f"cannot read image (not a NIfTI, or truncated/corrupt): {detail.strip()[:200]}", path=path
        ) from exc


NIFTI1_HEADER_BYTES = 348


def _check_nifti_voxel_size(path: Path) -> None:
    """Refuse a NIfTI-1 file whose voxel size is unknown: ITK takes the spacing from ``pixdim[1:4]`` (with an
    sform too) and reads a zero or non-finite entry as 1 mm without a word, and so would every metric in mm.
    A header that is not NIfTI-1 is left to the reader."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as stream:
        header = stream.read(NIFTI1_HEADER_BYTES)
    if len(header) < NIFTI1_HEADER_BYTES or header[344:347] not in (b"n+1", b"ni1"):
        return
    order = next((o for o in "<>" if np.frombuffer(header[:4], f"{o}i4")[0] == NIFTI1_HEADER_BYTES), None)
    if order is None:
        return
    pixdim = np.frombuffer(header[76:108], f"{order}f4")[1:4]
    if not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
        raise DataError(
            f"voxel size unknown: the header's pixdim[1:4] is {[float(v) for v in pixdim]} mm",
            path=path, fix="fix the header: set pixdim[1:4] to the voxel size in mm",
        )


def _check_gzip(path: Path) -> None:
    """Read a gzip file to its end marker and CRC: SimpleITK 2.5 reads a truncated ``.nii.gz`` without an
    error and returns the missing voxels as zeros, so truncation must be caught before it reads."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"cannot read image (not a NIfTI, or truncated/corrupt gzip): {exc}", path=path
        ) from exc


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""A full device, or a user over quota."""


LOW_SPACE_BYTES = 1 << 20
"""A device with less free space than this is full: some writers (``torch.save``) report a full device as an
error without ``errno`` (``RuntimeError: unexpected pos``)."""


def device_full(folder: str | Path | None) -> bool:
    """Whether the device holding ``folder`` (or its nearest existing parent) has under ``LOW_SPACE_BYTES`` free."""
    if folder is None:
        return False
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < LOW_SPACE_BYTES
    except OSError:
        return False


def is_no_space(exc: BaseException, folder: str | Path | None = None) -> bool:
    """Whether ``exc`` (or what caused it) is a full device or an exhausted quota, or any error while ``folder``'s
    device is full (:func:`device_full`)."""
    if device_full(folder):
        return True
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return False


def no_space_error(exc: BaseException, where: str | Path, fix: str | None = None) -> DataError:
    """One line for a full device: the file being written (``exc``'s, else ``where``) and what to do (``fix``,
    else: free space or move the outputs)."""
    cause = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    target = getattr(cause, "filename", None) if cause is not None else None
    target = target or where
    return DataError("no space left on the device", path=target,
                     fix=fix or "free space, or point paths.outputs / paths.cache elsewhere, and run the same command again: "
                     "finished configurations are skipped")


def write_atomic(path: str | Path, write: Callable[[Path], object], suffix: str = ".tmp") -> Path:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename it to ``path``.

    A reader never sees a half-written file, even if the process is killed while writing; on an error
    the temporary file is removed (a full device: a ``DataError`` naming ``path``). ``suffix`` ends the temporary name (some writers choose the format
    from it, e.g. ``.nii.gz`` or Keras' ``.weights.h5``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, DataError) and is_no_space(exc, path.parent):
            raise no_space_error(exc, path) from exc
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write a volume atomically (see :func:`write_atomic`)."""
    suffix = "".join(Path(path).suffixes) or ".nii.gz"
    return write_atomic(
        path, lambda tmp: sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=suffix.endswith(".gz")),
        suffix=suffix,
    )


def write_probability_maps(probabilities: npt.NDArray[Any], grid: Volume, path: str | Path) -> Path:
    """Write class probabilities ``[K, X, Y, Z]`` as one 4D float32 NIfTI ``[X, Y, Z, K]`` on ``grid``'s
    geometry (4th axis: class, spacing 1), atomically."""
    array = np.ascontiguousarray(np.asarray(probabilities, dtype=np.float32).transpose(0, 3, 2, 1))
    if tuple(array.shape[1:][::-1]) != grid.shape:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not fit grid {grid.shape}")
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing((*(float(s) for s in grid.spacing_mm), 1.0))
    image.SetOrigin((*(float(o) for o in grid.origin_mm), 0.0))
    d = [float(v) for v in grid.direction]
    image.SetDirection((*d[0:3], 0.0, *d[3:6], 0.0, *d[6:9], 0.0, 0.0, 0.0, 0.0, 1.0))
    return write_atomic(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), suffix=".nii.gz")


def link_tree(source: str | Path, target: str | Path) -> Path:
    """Make ``target`` hold the files of ``source`` (a file or a folder, recursively) as hard links: the bytes are
    stored once, ``source`` stays the original. A file that cannot be linked (another file system) is copied.
    Existing files at ``target`` are replaced."""
    source, target = Path(source), Path(target)
    pairs = [(source, target)] if source.is_file() else [
        (path, target / path.relative_to(source)) for path in sorted(source.rglob("*")) if path.is_file()]
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return target
