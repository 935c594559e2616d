"""Several input channels: preprocessing per channel (each with its own fitted state), the cache, the model
folder's record, and the scans ``bench predict`` is given (channel files, nnU-Net-named folders)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.data.cohort import Case
from bench.data.labels import LabelSet
from bench.errors import DataError
from bench.io import Volume, write_volume
from bench.predict.inputs import find_scans
from bench.preprocess.pipeline import Pipeline, PreprocessCache
from tests.test_preprocess import make_case

STEPS = [{"name": "spacing", "target_spacing_mm": [1.5, 1.5, 1.5]}, {"name": "histmatch", "match_points": 7},
         {"name": "standardise"}]


def two_channel(case: Case, seed: int) -> Case:
    """``case`` with a second channel: an inverted contrast inside the brain, with its own noise."""
    rng = np.random.default_rng(seed)
    first = case.image.array.astype(np.float32)
    second = np.where(first > 0, 200.0 - first + rng.normal(0, 3, first.shape), 0.0).astype(np.float32)
    return replace(case, extra=(case.image.with_array(second),))


def cohort() -> list[Case]:
    return [two_channel(make_case(f"S{i}", "train" if i < 2 else "test", seed=i), seed=10 + i) for i in range(3)]


def test_each_channel_gets_its_own_steps_and_state() -> None:
    cases = cohort()
    pipeline = Pipeline.from_spec(STEPS)
    pipeline.fit(cases)
    assert pipeline.num_channels == 2
    state = pipeline.state()
    assert [len(entry["channels"]) for entry in state] == [2, 2, 2]
    first, second = state[1]["channels"]
    assert first["reference_id"] == second["reference_id"] == "S0"
    assert first["reference_sha256"] != second["reference_sha256"]  # one histogram reference per channel

    single = Pipeline.from_spec(STEPS)
    single.fit([replace(c, extra=()) for c in cases])
    out = pipeline.apply(cases[2])
    alone = single.apply(replace(cases[2], extra=()))
    np.testing.assert_array_equal(out.image.array, alone.image.array)  # channel 0 as if it were alone
    np.testing.assert_array_equal(out.mask, alone.mask)
    assert out.label is not None and alone.label is not None
    np.testing.assert_array_equal(out.label.array, alone.label.array)
    network_input = out.network_input()
    assert network_input.shape == (2, *out.image.shape)
    inside = network_input[1][out.mask]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1.0) < 1e-3  # channel 1 standardised on its own


def test_a_case_with_another_channel_count_is_refused() -> None:
    pipeline = Pipeline.from_spec(STEPS)
    pipeline.fit(cohort())
    with pytest.raises(DataError, match=r"1 input channel.*fitted on 2"):
        pipeline.apply(replace(cohort()[2], extra=()))


def test_cache_round_trip_keeps_every_channel(tmp_path: Path) -> None:
    cases = cohort()
    pipeline = Pipeline.from_spec(STEPS)
    pipeline.fit(cases)
    cache = PreprocessCache(tmp_path)
    computed = cache.get_or_compute(pipeline, cases[2])
    loaded = cache.get_or_compute(pipeline, cases[2])
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(loaded.network_input(), computed.network_input())
    single = Pipeline.from_spec(STEPS)
    single.fit([replace(c, extra=()) for c in cases])
    assert cache.path(pipeline, cases[2]) != cache.path(single, replace(cases[2], extra=()))


def test_model_folder_restores_each_channels_state(tmp_path: Path) -> None:
    from bench.config import run_spec_from_config
    from bench.predict.package import read_package, write_package
    from bench.sweeps import compose_config, to_container

    cfg = to_container(compose_config(["+experiment=table1/row5", "profile=smoke", f"data.root={tmp_path}"]))
    network_spec = run_spec_from_config(cfg).network

    cases = cohort()
    pipeline = Pipeline.from_spec(STEPS, name="spacing")
    pipeline.fit(cases)
    labels = LabelSet.from_mapping({"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10})
    write_package(tmp_path / "model", lambda d: d.mkdir(), network_spec, pipeline, cases[:2], {},
                  labels, ("T1", "FLAIR"))
    info, restored = read_package(tmp_path / "model")
    assert info.channels == ("T1", "FLAIR") and info.labels == labels and info.num_classes == 5
    assert restored.state() == pipeline.state()
    np.testing.assert_array_equal(restored.apply(cases[2]).network_input(), pipeline.apply(cases[2]).network_input())


def _write(path: Path, shape: tuple[int, int, int] = (6, 5, 4), spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    array = np.random.default_rng(len(str(path))).uniform(1, 2, shape).astype(np.float32)
    return write_volume(Volume(array, spacing), path)


def test_find_scans_reads_nnunet_naming(tmp_path: Path) -> None:
    for case in ("a", "b"):
        for channel in range(2):
            _write(tmp_path / f"{case}_{channel:04d}.nii.gz")
    scans = find_scans(tmp_path, channels=2)
    assert [(s.id, s.path.name, [p.name for p in s.extra]) for s in scans] == [
        ("a", "a_0000.nii.gz", ["a_0001.nii.gz"]), ("b", "b_0000.nii.gz", ["b_0001.nii.gz"])]
    case = scans[0].load()
    assert case.num_channels == 2 and case.id == "a"
    one = find_scans([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"], channels=2)
    assert one[0].id == "a" and one[0].num_channels == 2


def test_find_scans_names_a_missing_channel_file(tmp_path: Path) -> None:
    for name in ("a_0000", "a_0001", "b_0000"):
        _write(tmp_path / f"{name}.nii.gz")
    with pytest.raises(DataError, match=r"case b lacks channel file.*b_0001"):
        find_scans(tmp_path, channels=2)
    with pytest.raises(DataError, match=r"1 input file.*2 input channel"):
        find_scans(tmp_path / "a_0000.nii.gz", channels=2)


def test_channels_on_different_grids_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a_0000.nii.gz")
    _write(tmp_path / "a_0001.nii.gz", spacing=(1.0, 2.0, 1.0))
    with pytest.raises(DataError, match="another grid than a_0000"):
        find_scans(tmp_path, channels=2)[0].load()


def test_one_4d_image_holding_every_channel_is_a_case(tmp_path: Path) -> None:
    import nibabel as nib

    data = np.random.default_rng(0).uniform(1, 2, (6, 5, 4, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 1.0, 1.0, 1.0])), tmp_path / "BRATS_001.nii.gz")
    (scan,) = find_scans(tmp_path / "BRATS_001.nii.gz", channels=2)
    case = scan.load()
    assert case.id == "BRATS_001" and case.num_channels == 2
    np.testing.assert_allclose(case.extra[0].array, data[..., 1])
    assert case.image.spacing_mm == (2.0, 1.0, 1.0)
    with pytest.raises(DataError, match=r"holds 2 channel|2 channel"):
        find_scans(tmp_path / "BRATS_001.nii.gz", channels=3)[0].load()
