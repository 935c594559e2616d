"""bench.evaluation.report.collect: which MLflow runs make a Table 1 row (a fake tracker with known runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.evaluation.report import CONFIG_KEYS, cell_stats, collect

KEY = {"table_row": "5", "architecture": "unet3d", "preprocess": "raw", "optimizer": "adadelta", "loss": "dice",
       "framework": "torch", "sampling": "uniform", "profile": "quick"}


class FakeTracker:
    """``runs_frame`` / ``download_artifact`` over runs whose metrics.csv give every CSF Dice one value."""

    experiment = "fake"

    def __init__(self, runs: list[tuple[str, int, str, str, float]]) -> None:
        self.runs = runs  # (run id, start time, config hash, seed, CSF dice)

    def runs_frame(self, status: str) -> pd.DataFrame:
        rows = []
        for run_id, start, config_hash, seed, _ in self.runs:
            row = {"run_id": run_id, "start_time": start, "tags.brainbench.config_hash": config_hash,
                   "tags.seed": seed, "tags.label": "U-Net"}
            row.update({f"tags.{k}": v for k, v in KEY.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def download_artifact(self, run_id: str, name: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        dice = next(r[4] for r in self.runs if r[0] == run_id)
        if name == "metrics.csv":
            pd.DataFrame([{"case": c, "class": "CSF", "dice": dice, "avd": 0.0, "hd": 1.0, "hd95": 1.0,
                           "assd": 0.5} for c in ("IBSR_04", "IBSR_09")]).to_csv(local / name, index=False)
        else:
            (local / name).write_text(json.dumps({"run": run_id}))


def test_a_rerun_with_changed_settings_replaces_the_older_numbers(tmp_path: Path) -> None:
    # same row and seed, two config hashes (e.g. more epochs the second time): only the newest counts
    tracker = FakeTracker([("old", 1, "h1", "0", 0.2), ("new", 2, "h2", "0", 0.8)])
    (result,) = collect(tracker, tmp_path)
    assert result.run_ids == ["new"]
    assert cell_stats(result, "dice", "CSF") == (0.8, 0.0, 2)
    assert set(result.key) == set(CONFIG_KEYS)


def test_seeds_of_one_configuration_are_averaged_over_seed_means(tmp_path: Path) -> None:
    tracker = FakeTracker([("a", 1, "h1", "0", 0.5), ("b", 2, "h2", "1", 0.7), ("c", 3, "h3", "1", 0.9)])
    (result,) = collect(tracker, tmp_path)
    assert sorted(result.run_ids) == ["a", "c"]
    mean, sd, n = cell_stats(result, "dice", "CSF")
    assert n == 2 and abs(mean - 0.7) < 1e-12
    assert abs(sd - pd.Series([0.5, 0.9]).std(ddof=1)) < 1e-12
