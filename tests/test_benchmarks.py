"""Tests for the benchmark suite (benchmarks/): its helpers, and one ``--quick`` run end to end."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench.contract import PatchBatch
from bench.patching.inference import predict_volume
from bench.patching.sampler import PatchSampler, PatchSubject

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is not an installed package: import it from the checkout
    sys.path.insert(0, str(REPO))

from benchmarks import brain_box, load_subjects, normalise, suite, suite_report, time_interleaved  # noqa: E402
from benchmarks.bench_inference import Float64GaussianAggregator, aggregator, torch_predictor  # noqa: E402
from benchmarks.bench_training import sanity  # noqa: E402
from benchmarks.training_common import train_spec  # noqa: E402
from benchmarks.training_flops import conv_flops_per_patch, training_flops_per_patch  # noqa: E402
from benchmarks.training_overhead import TimedSource  # noqa: E402
from benchmarks.training_prefetch import SleepSteps, measure  # noqa: E402


def test_conv_flops_counts_convolutions_and_transposed_convolutions() -> None:
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.MaxPool3d(2), nn.ConvTranspose3d(3, 5, 2, stride=2))
    # conv: 2·27·2·3 per output voxel × 4³ voxels; transposed: 2·8·3·5 per input voxel × 2³ voxels
    expected = 2 * 27 * 2 * 3 * 64 + 2 * 8 * 3 * 5 * 8
    assert conv_flops_per_patch(net, (4, 4, 4), in_channels=2) == expected


def test_training_flops_match_a_hand_count_from_the_layer_shapes() -> None:
    """conv 2->3 (3³, 4³ voxels), pool, transposed conv 3->5 (2³ stride 2, 2³ -> 4³ voxels), conv 5->4 (1³)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.MaxPool3d(2), nn.ConvTranspose3d(3, 5, 2, stride=2),
                        nn.Conv3d(5, 4, 1))
    first = 2 * 27 * 2 * 3 * 4**3  # per output voxel
    transposed = 2 * 8 * 3 * 5 * 2**3  # per INPUT voxel: 2·3·5 per output voxel, not 2·8·3·5
    head = 2 * 1 * 5 * 4 * 4**3
    flops = training_flops_per_patch(net, (4, 4, 4), in_channels=2)
    assert flops.forward == first + transposed + head
    assert flops.weight_grad == first + transposed + head
    assert flops.input_grad == transposed + head  # the image needs no gradient: none for the first conv
    assert flops.train == 3 * (first + transposed + head) - first
    # torch's own counter of the aten convolution calls, forward and backward, agrees
    image = torch.zeros(1, 2, 4, 4, 4)
    with FlopCounterMode(display=False) as counter:
        net(image).sum().backward()
    assert counter.get_total_flops() == flops.train


def test_sanity_flags_achieved_above_peak() -> None:
    peak = {"peak_gflops": {"fp32_1t": 100.0, "bf16_1t": 400.0, "fp32_2t": 180.0}}
    ok = sanity([("torch fp32", 90.0, "fp32", 1), ("torch bf16", 150.0, "bf16", 1), ("2 threads", 150.0, "fp32", 2),
                 ("tf bf16", None, "bf16", 1)], peak)
    assert ok["achieved_le_peak"] and ok["above_peak"] == []
    assert [c["ok"] for c in ok["checks"]] == [True, True, True, None]
    assert ok["checks"][0]["fraction_of_peak"] == 0.9
    bad = sanity([("torch fp32 at 1 thread", 150.0, "fp32", 1)], peak)  # above the 1-thread peak, not the 2-thread
    assert not bad["achieved_le_peak"] and bad["above_peak"] == ["torch fp32 at 1 thread"]


def test_time_interleaved_rotates_calls_and_returns_medians() -> None:
    calls: list[str] = []

    def call(name: str, value: int) -> int:
        calls.append(name)
        return value

    timed = time_interleaved({"a": lambda: call("a", 1), "b": lambda: call("b", 2)}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then rotated rounds
    assert set(timed.wall) == set(timed.cpu) == {"a", "b"}
    assert all(len(v) == 3 for v in [*timed.wall_all.values(), *timed.cpu_all.values()])
    assert timed.wall["a"] == sorted(timed.wall_all["a"])[1]  # the median of three
    assert timed.results == {"a": 1, "b": 2}


def test_timings_measure_cpu_time_apart_from_waiting() -> None:
    import time

    timed = time_interleaved({"sleep": lambda: time.sleep(0.05)}, repeats=1, warmup=0)
    assert timed.wall["sleep"] >= 0.05 and timed.cpu["sleep"] < 0.04


def test_brain_box_grows_and_clips() -> None:
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[3:5, 0:2, 10:14] = True
    assert brain_box(mask, margin=2) == (slice(1, 7), slice(0, 4), slice(8, 14))


def test_normalise_is_a_zscore_inside_the_mask_and_zero_outside() -> None:
    image = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = image > 5
    out = normalise(image, mask)
    assert out.dtype == np.float32
    assert np.all(out[~mask] == 0)
    assert abs(float(out[mask].mean())) < 1e-6 and abs(float(out[mask].std()) - 1) < 1e-6


def test_float32_gaussian_sums_match_float64_ones() -> None:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 21, 18, 13)).astype(np.float32)
    torch.manual_seed(0)
    predict = torch_predictor(nn.Conv3d(1, 4, 3, padding=1).eval())
    fast = predict_volume(predict, image, 8, batch_size=3)
    with aggregator(Float64GaussianAggregator):
        reference = predict_volume(predict, image, 8, batch_size=3)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, atol=1e-6)


def test_timed_source_interleaves_bare_runs_and_survives_an_early_stop() -> None:
    subject = load_subjects(1, quick=True)[0]
    sampler = PatchSampler([PatchSubject(subject.image, subject.label, subject.mask)], 8, batch_size=2)
    runs: list[int] = []

    def between() -> tuple[float, float]:
        runs.append(len(runs))
        return (0.5, 0.25)

    source = TimedSource(sampler, steps=3, between=between, between_count=2)
    first = next(iter(source.batches(5)))  # the consumer stops after one batch
    assert first.image.shape == (2, 1, 8, 8, 8)
    assert len(source.seconds) == 1 and source.seconds[0] > 0
    assert len(list(source.batches(0))) == 3 and len(source) == 3
    assert len(list(source.batches(1))) == 3
    assert runs == [0, 1] and source.between_s == [(0.5, 0.25), (0.5, 0.25)]  # only between_count times
    epochs = source.epoch_seconds()  # from each epoch's first batch to the next call: 2 of 3 epochs
    assert len(epochs) == 2 and all(wall > 0 and cpu >= 0 for wall, cpu in epochs)


@pytest.mark.ibsr
def test_ibsr18_subjects_are_used_when_ibsr18_root_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(os.environ.get("IBSR18_ROOT", REPO.parent / "shared" / "data" / "ibsr18"))
    if not (root / "Training_Set").is_dir():
        pytest.skip(f"IBSR18 not found at {root}")
    monkeypatch.setenv("IBSR18_ROOT", str(root))
    subject = load_subjects(1)[0]
    assert subject.id == "IBSR_01" and Path(subject.source).is_file()
    assert subject.image.shape == subject.label.shape == subject.mask.shape == (256, 128, 256)
    assert subject.image.dtype == np.float32 and np.array_equal(subject.mask, subject.label > 0)
    assert set(np.unique(subject.label)) <= {0, 1, 2, 3}


def test_verdict_applies_targets() -> None:
    assert suite_report.verdict("inference_ratio_vs_monai", 0.98) == "pass"
    assert suite_report.verdict("inference_ratio_vs_monai", 1.2) == "FAIL"
    assert suite_report.verdict("sampler_speedup_vs_torchio", 1.5) == "FAIL"
    assert suite_report.verdict("sampler_speedup_vs_torchio", None) == "n/a"
    assert suite_report.verdict("cpu_peak_gflops", 50.0) == "-"


def test_quick_suite_writes_results_and_report(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        assert suite.main(["--quick", "--no-tf", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "results.json").read_text())
    for key in suite.REQUIRED_KEYS:
        assert key in results
        if key == "unet3d_tf_train_patches_per_s":
            assert results[key] is None  # --no-tf
            continue
        assert isinstance(results[key], int | float) and math.isfinite(results[key]), key
    assert results["quick"] is True
    assert not any("error" in section for section in results["sections"].values())
    # Correctness holds in any mode: same values as medpy and MONAI.
    assert results["metrics_max_abs_diff_vs_medpy"] <= 1e-6
    assert results["inference_max_abs_diff_vs_monai"] <= 1e-5
    assert results["sections"]["inference"]["inference_f64_max_abs_diff_vs_monai"] <= 1e-5
    for key in ("metrics_s_per_case", "inference_s_per_volume", "sampler_patches_per_s", "cpu_peak_gflops",
                "unet3d_torch_train_patches_per_s", "achieved_gflops_torch"):
        assert results[key] > 0, key
    assert results["train_step_overhead_fraction"] < 1
    training = results["sections"]["training"]
    assert results["unet3d_torch_train_patches_per_s_fp32"] > 0 and results["achieved_gflops_torch_fp32"] > 0
    bf16_native = training["peak"]["cpu_peak_gflops_bf16"] is not None
    assert (results["unet3d_torch_train_patches_per_s_bf16"] is not None) == bf16_native
    assert results["unet3d_tf_train_patches_per_s_fp32"] is None  # --no-tf
    checks = training["sanity"]["checks"]
    assert {c["dtype"] for c in checks} == ({"fp32", "bf16"} if bf16_native else {"fp32"})
    assert results["achieved_le_peak"] == all(c["ok"] is not False for c in checks)
    assert training["unet3d_train_gflop_per_patch"] < training["unet3d_train_gflop_per_patch_3x_forward"]
    norms = training["norm_speed"]
    assert norms["precision"] == {"torch": "bf16" if bf16_native else "fp32"} and "tf" not in norms
    assert set(norms["torch"]) == {"none", "batch", "instance", "instance_layer"}
    assert all(speed > 0 for speed in norms["torch"].values())
    report = (tmp_path / "report.md").read_text()
    assert "Normalisation layers" in report and "| instance_layer |" in report
    assert "Quick mode" in report
    assert "Sanity" in report and "fp32 vs bf16" in report
    for key in suite.REQUIRED_KEYS + suite.PRECISION_KEYS:
        assert f"`{key}`" in report
    assert "torch.compile: not run" in report
    for key in suite_report.DATA_WAIT_KEYS:  # the share of a step spent waiting for data
        assert 0 <= results[key] < 1, key
    assert "## Waiting for data" in report


class SlowSource:
    """A patch source whose every batch takes ``seconds`` to make (a sleep: no CPU, so load does not matter)."""

    patch_size = (4, 4, 4)
    batch_size = 1

    def __init__(self, seconds: float, count: int) -> None:
        self.seconds, self.count = seconds, count

    def __len__(self) -> int:
        return self.count

    def batches(self, epoch: int) -> Any:
        for _ in range(self.count):
            time.sleep(self.seconds)
            yield PatchBatch(np.zeros((1, 1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 4), np.int64))


def test_data_wait_is_half_the_epoch_when_making_a_batch_takes_as_long_as_a_step() -> None:
    spec = train_spec(8, 3, 1)
    without = measure(SleepSteps(0.02), SlowSource(0.02, 8), replace(spec, prefetch_batches=0))  # type: ignore[arg-type]
    ahead = measure(SleepSteps(0.02), SlowSource(0.02, 8), replace(spec, prefetch_batches=2))  # type: ignore[arg-type]
    assert 0.4 < without < 0.6  # 20 ms of waiting per 40 ms
    assert ahead < 0.25  # only the epoch's first batch waits (1 of 8), and the thread's hand-over


@pytest.mark.parametrize("bad", [["--skip", "nonsense"], ["--threads", "x"]])
def test_suite_rejects_bad_arguments(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        suite.parse_args(bad)


def _speed_line(row: int, framework: str, train: float, infer: float, peak: float, **changed: object) -> dict:
    line = {"row": row, "framework": framework, "architecture": "unet3d", "train_patches_per_s": train,
            "infer_patches_per_s": infer, "peak_memory_mb": peak, "device": "cpu" if framework == "torch" else "/CPU:0",
            "precision": "fp32", "threads": 1, "patch": [32, 32, 32], "batch": 8, "profile": "quick"}
    return {**line, **changed}


def test_speed_table_takes_each_row_and_frameworks_median_over_rounds(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed_table import main, medians

    lines = [_speed_line(5, "torch", t, 100.0 + t, 600.0) for t in (30.0, 10.0, 20.0)]
    lines += [_speed_line(5, "tf", t, 90.0, 900.0) for t in (40.0, 44.0)]
    found = medians(lines)
    assert found[(5, "torch")] == {"train_patches_per_s": 20.0, "infer_patches_per_s": 120.0,
                                   "peak_memory_mb": 600.0, "rounds": 3.0}
    assert found[(5, "tf")]["train_patches_per_s"] == 42.0  # the median of two is their mean
    path = tmp_path / "speed.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main([str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row == "| 5 | unet3d | 20.0 | 42.0 | 120.0 | 90.0 | 600.0 | 900.0 | 2.10 | 0.75 | 1.50 | 3/2 |"


def test_speed_table_refuses_lines_of_different_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed_table import main

    path = tmp_path / "speed.jsonl"
    path.write_text(json.dumps(_speed_line(5, "torch", 1, 1, 1)) + "\n"
                    + json.dumps(_speed_line(5, "tf", 1, 1, 1, precision="bf16")) + "\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in precision" in err[0] and str(path) in err[0]
