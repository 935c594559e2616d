"""Tests for bench.data.synth: determinism, labels, IBSR layout, rewrite rules, ``bench synth``, phantom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.data.cohort import SPACING_TOL_MM, load_cohort
from bench.data.discovery import IBSR18
from bench.data.synth import (
    IBSR_DIRECTION,
    SUBJECT_ORDER,
    generate_subject,
    phantom_case,
    write_cohort,
)
from bench.errors import ConfigError
from bench.io import read_volume

TINY = (48, 32, 48)
SCALE = 4.5


@pytest.fixture(scope="module")
def cohort7(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth7")
    write_cohort(out, 7, seed=3, shape=TINY, spacing_scale=SCALE)
    return out


def test_same_seed_same_arrays_other_seed_differs() -> None:
    image_a, label_a = generate_subject(0, 5, TINY, SCALE)
    image_b, label_b = generate_subject("IBSR_01", 5, TINY, SCALE)
    np.testing.assert_array_equal(image_a.array, image_b.array)
    np.testing.assert_array_equal(label_a.array, label_b.array)
    image_c, label_c = generate_subject(0, 6, TINY, SCALE)
    assert not np.array_equal(image_a.array, image_c.array)
    assert not np.array_equal(label_a.array, label_c.array)


def test_labels_background_and_grid() -> None:
    image, label = generate_subject("IBSR_16", 0, TINY, SCALE)
    assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
    assert image.shape == label.shape == TINY
    counts = np.bincount(label.array.ravel(), minlength=4)
    assert len(counts) == 4 and (counts > 0).all()  # labels are exactly {0, 1, 2, 3}
    assert counts[2] > counts[1] and counts[3] > counts[1]  # GM and WM outweigh CSF, as in a brain
    assert (image.array[label.array == 0] == 0).all()  # background exactly 0
    assert np.mean(image.array[label.array > 0] > 0) > 0.99
    expected = np.asarray(IBSR18["IBSR_16"].spacing_mm) * SCALE
    np.testing.assert_allclose(image.spacing_mm, expected, atol=SPACING_TOL_MM)
    assert image.direction == IBSR_DIRECTION and label.same_grid(image)
    brain = np.argwhere(label.array > 0)
    centre = (brain.min(0) + brain.max(0)) / 2
    np.testing.assert_allclose(centre, (np.asarray(TINY) - 1) / 2, atol=3)  # brain centred
    assert (brain.min(0) > 0).all()  # not cut by the grid in x or z at this scale


def test_tissue_intensity_order() -> None:
    image, label = generate_subject(4, 1, TINY, SCALE)
    means = [image.array[label.array == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1: CSF < GM < WM


def test_intensity_scales_vary_between_subjects() -> None:
    maxima = {int(generate_subject(i, 0, (24, 16, 24), 9.0)[0].array.max()) for i in range(6)}
    assert len(maxima) == 6 and min(maxima) > 40


def test_layout_of_seven_subjects(cohort7: Path) -> None:
    for subject_id in SUBJECT_ORDER[:7]:
        folder = cohort7 / IBSR18[subject_id].folder / subject_id
        assert (folder / f"{subject_id}.nii.gz").is_file()
        assert (folder / f"{subject_id}_seg.nii.gz").is_file() == (IBSR18[subject_id].folder != "Test_Set")
    assert not (cohort7 / "Test_Set" / "IBSR_02" / "IBSR_02_seg.nii.gz").exists()
    subjects = sorted(p.name for p in cohort7.glob("*/IBSR_*"))
    assert subjects == sorted(SUBJECT_ORDER[:7])


def test_paper_split_on_seven_subjects(cohort7: Path) -> None:
    cohort = load_cohort(cohort7, "paper")
    assert set(cohort.ids("train")) == {"IBSR_01", "IBSR_03"}
    assert set(cohort.ids("val")) == {"IBSR_07", "IBSR_16"}
    assert set(cohort.ids("test")) == {"IBSR_11", "IBSR_12"}
    assert cohort.ids("predict") == ["IBSR_02"]
    case = cohort.get("IBSR_07")
    image, label = generate_subject("IBSR_07", 3, TINY, SCALE)
    np.testing.assert_array_equal(case.image.array, image.array)  # written = generated
    assert case.label is not None
    np.testing.assert_array_equal(case.label.array, label.array)


def test_rewrite_is_deterministic_and_removes_stale_subjects(tmp_path: Path) -> None:
    shape = (24, 16, 24)
    paths = write_cohort(tmp_path, 3, seed=1, shape=shape, spacing_scale=9.0)
    first = {p: read_volume(p).array for p in paths}
    assert write_cohort(tmp_path, 3, seed=1, shape=shape, spacing_scale=9.0) == paths
    for path, array in first.items():
        np.testing.assert_array_equal(read_volume(path).array, array)
    write_cohort(tmp_path, 1, seed=1, shape=shape, spacing_scale=9.0)
    assert sorted(p.name for p in tmp_path.glob("*/IBSR_*")) == ["IBSR_01"]
    assert not (tmp_path / "Training_Set" / "IBSR_16").exists()


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        write_cohort(tmp_path, 1, seed=0, shape=(24, 16, 24), spacing_scale=9.0)
    assert (tmp_path / "thesis.tex").read_text() == "precious"
    assert not (tmp_path / "Training_Set").exists()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"subjects": 0}, "between 1 and 18, got 0"),
        ({"subjects": 19}, "between 1 and 18, got 19"),
        ({"subjects": ["IBSR_42"]}, "unknown synthetic subject 'IBSR_42'"),
        ({"seed": -1}, "non-negative integer, got -1"),
        ({"shape": (4, 32, 48)}, r"three integers >= 8, got \(4, 32, 48\)"),
        ({"spacing_scale": 0.0}, "positive number, got 0.0"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, object], pattern: str) -> None:
    params: dict[str, object] = {"subjects": 1, "seed": 0, "shape": (24, 16, 24), "spacing_scale": 9.0}
    params.update(kwargs)
    with pytest.raises(ConfigError, match=pattern):
        write_cohort(tmp_path / "out", **params)  # type: ignore[arg-type]


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    args = ["synth", "--out", str(out), "--subjects", "2", "--seed", "4", "--shape", "24", "16", "24"]
    assert main([*args, "--spacing-scale", "9"]) == 0
    assert "wrote 2 subjects (2 labelled)" in capsys.readouterr().out
    image = read_volume(out / "Training_Set" / "IBSR_07" / "IBSR_07.nii.gz")
    assert image.shape == (24, 16, 24) and image.array.dtype == np.int16
    np.testing.assert_allclose(image.spacing_mm, (9.0, 13.5, 9.0), atol=SPACING_TOL_MM)
    assert main([*args[:3], "--subjects", "19"]) == 2
    assert "between 1 and 18" in capsys.readouterr().err


def test_phantom_case() -> None:
    case = phantom_case((16, 20, 12), spacing_mm=(1.0, 2.0, 1.5), seed=2, case_id="p1")
    assert case.id == "p1" and case.label is not None
    assert case.image.shape == case.label.shape == (16, 20, 12)
    assert case.image.spacing_mm == (1.0, 2.0, 1.5)
    assert set(np.unique(case.label.array).tolist()) == {0, 1, 2, 3}
    assert (case.image.array[case.label.array == 0] == 0).all()
    means = [case.image.array[case.label.array == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    again = phantom_case((16, 20, 12), spacing_mm=(1.0, 2.0, 1.5), seed=2)
    np.testing.assert_array_equal(case.image.array, again.image.array)
    other = phantom_case((16, 20, 12), spacing_mm=(1.0, 2.0, 1.5), seed=3)
    assert not np.array_equal(case.image.array, other.image.array)
    small = phantom_case((8, 8, 8))
    assert small.label is not None and len(np.unique(small.label.array)) == 4


@pytest.mark.slow
def test_full_size_subject() -> None:
    image, label = generate_subject("IBSR_18", 0)
    assert image.shape == (256, 128, 256)
    np.testing.assert_allclose(image.spacing_mm, (0.8370536, 1.5, 0.8370536), atol=1e-6)
    counts = np.bincount(label.array.ravel(), minlength=4)
    assert (counts > 0).all() and len(counts) == 4
    brain_mm3 = counts[1:].sum() * np.prod(image.spacing_mm)
    assert 1.0e6 < brain_mm3 < 2.2e6  # a human brain: ~1.1-1.8 litres
    assert (image.array[label.array == 0] == 0).all()
    assert 60 < image.array.max() < 1500
