"""``bench.io.read_volume``: what it refuses that SimpleITK reads without a word (a voxel size of 0 or NaN
mm read as 1 mm; complex voxels), and what it keeps (a negative pixdim is its size, as ITK and nibabel read it)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.errors import DataError
from bench.io import read_channels, read_volume


def write_with_pixdim(path: Path, pixdim: tuple[float, float, float], sform: bool = False) -> None:
    """A NIfTI-1 file whose header holds exactly ``pixdim[1:4]`` (nibabel would replace 0 by 1 on save)."""
    affine = np.diag([2.0, 3.0, 4.0, 1.0]) if sform else None
    image = nib.Nifti1Image(np.arange(512, dtype=np.float32).reshape(8, 8, 8), affine)
    image.header["sform_code"] = 1 if sform else 0
    image.header["qform_code"] = 0
    image.header["vox_offset"] = 352  # 348 header bytes + 4 extension flag bytes
    raw = bytearray(image.header.binaryblock) + bytearray(4) + image.get_fdata(dtype=np.float32).tobytes("F")
    raw[80:92] = struct.pack("<3f", *pixdim)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))


@pytest.mark.parametrize("pixdim", [(0.0, 0.0, 0.0), (1.0, float("nan"), 1.0), (1.0, 1.0, float("inf"))],
                         ids=["zero", "nan", "inf"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("sform", [False, True], ids=["no-sform", "sform"])
def test_an_unknown_voxel_size_is_refused(tmp_path: Path, pixdim: tuple[float, float, float], suffix: str,
                                          sform: bool) -> None:
    path = tmp_path / f"scan{suffix}"
    write_with_pixdim(path, pixdim, sform)
    with pytest.raises(DataError) as caught:
        read_volume(path)
    assert str(path) in caught.value.message and "voxel size unknown" in caught.value.message
    assert "fix the header" in caught.value.message


def test_a_valid_and_a_negative_pixdim_are_read_as_their_size(tmp_path: Path) -> None:
    write_with_pixdim(tmp_path / "ok.nii.gz", (1.5, 1.0, 2.0))
    volume = read_volume(tmp_path / "ok.nii.gz")
    assert volume.spacing_mm == (1.5, 1.0, 2.0)
    assert np.array_equal(volume.array, np.arange(512, dtype=np.float32).reshape(8, 8, 8))
    write_with_pixdim(tmp_path / "negative.nii", (-1.5, 1.0, 2.0))
    assert read_volume(tmp_path / "negative.nii").spacing_mm == (1.5, 1.0, 2.0)


def test_a_complex_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.complex64), np.eye(4)), str(path))
    with pytest.raises(DataError, match="complex-valued image") as caught:
        read_volume(path)
    assert str(path) in caught.value.message and "magnitude" in caught.value.message


def test_read_channels_splits_a_4d_image_and_read_volume_still_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "multi.nii.gz"
    array = np.arange(8 * 6 * 4 * 3, dtype=np.float32).reshape(8, 6, 4, 3)
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 2.0, 2.5, 1.0])), str(path))
    channels = read_channels(path, 3)
    assert len(channels) == 3
    for c, volume in enumerate(channels):
        assert volume.shape == (8, 6, 4) and volume.spacing_mm == (1.5, 2.0, 2.5)
        assert np.array_equal(volume.array, array[..., c])
    with pytest.raises(DataError, match=r"image holds 3 channel\(s\) .*; 2 expected") as caught:
        read_channels(path, 2)
    assert str(path) in caught.value.message
    with pytest.raises(DataError, match="4D image with 3 volumes"):
        read_volume(path)
    single = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(array[..., 0], np.eye(4)), str(single))
    assert np.array_equal(read_channels(single, 1)[0].array, array[..., 0])
