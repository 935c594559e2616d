"""``bench train-speed``: a Table 1 row's network as a profile configures it, timed with its own peak memory."""

from __future__ import annotations

import json

import pytest

from bench.cli import main as bench_main


def test_a_rows_network_is_timed_as_its_profile_configures_it(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_main(["train-speed", "--row", "9", "--profile", "smoke", "--framework", "torch", "--steps", "1",
                       "--warmup", "1", "--threads", "1", "--precision", "fp32"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["row"] == 9 and result["profile"] == "smoke" and result["architecture"] == "unet3d"
    assert result["patch"] == [16, 16, 16] and result["precision"] == "fp32" and result["threads"] == 1
    assert result["train_patches_per_s"] > 0 and result["peak_memory_mb"] > 50


def test_arch_or_row_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["train-speed", "--framework", "torch"]) == 2
    assert capsys.readouterr().err.startswith("error: give --arch or --row")
