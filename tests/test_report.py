"""bench.evaluation.report: which MLflow runs make a Table 1 row, and the report files built from them (a fake
tracker with known runs and per-subject numbers; no training, no MLflow store)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.cli import main as bench_main
from bench.data.labels import IBSR_LABELS, LabelSet
from bench.evaluation import report
from bench.evaluation.paper import paper_value
from bench.evaluation.report import cell_stats, markdown_table, table_frame
from bench.evaluation.runs import CONFIG_KEYS, collect
from bench.evaluation.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from bench.io import Volume, write_volume

KEY = {"table_row": "5", "architecture": "unet3d", "preprocess": "raw", "optimizer": "adadelta", "loss": "dice",
       "framework": "torch", "sampling": "uniform", "profile": "quick"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class FakeRun:
    """One FINISHED child run: its tags and its metrics.csv (``dice`` per (case, class); other metrics derived)."""

    run_id: str
    start: int
    dice: Mapping[tuple[str, str], float]
    row: str = "5"
    seed: str = "0"
    fold: str | None = None
    config_hash: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Path] = field(default_factory=dict)  # subject -> a NIfTI to serve
    tags: dict[str, str] = field(default_factory=dict)  # more tags (convergence, unlearned classes)
    status: str = "FINISHED"
    params: dict[str, str] = field(default_factory=dict)  # the run's record (effective settings, env.*)
    metrics: dict[str, float] = field(default_factory=dict)  # its MLflow metrics (fit_seconds, ...)

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"case": case, "class": tissue, "dice": dice, "avd": 100 * (1 - dice),
                              "hd": 10 * (1 - dice), "hd95": 5 * (1 - dice), "assd": 1 - dice}
                             for (case, tissue), dice in self.dice.items()])


class FakeTracker:
    """``runs_frame`` / ``download_artifact`` / ``parent_run`` / ``log_artifact`` over known runs."""

    experiment = "fake"

    def __init__(self, runs: Sequence[FakeRun]) -> None:
        self.runs = list(runs)
        self.logged: list[Path] = []

    def runs_frame(self, status: str | None) -> pd.DataFrame:
        rows = []
        for run in self.runs:
            if status is not None and run.status != status:
                continue
            row: dict[str, Any] = {"run_id": run.run_id, "status": run.status, "start_time": run.start,
                                   "tags.label": "U-Net",
                                   "tags.brainbench.config_hash": run.config_hash or run.run_id,
                                   "tags.seed": run.seed}
            row.update({f"tags.{k}": v for k, v in KEY.items()})
            row["tags.table_row"] = run.row
            if run.fold is not None:  # an old run has no fold tag: the column is NaN, or absent altogether
                row["tags.fold"] = run.fold
            row.update({f"tags.{k}": v for k, v in run.tags.items()})
            row.update({f"params.{k}": v for k, v in run.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def download_artifact(self, run_id: str, name: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        run = next(r for r in self.runs if r.run_id == run_id)
        if name == "metrics.csv":
            run.metrics_frame().to_csv(local / name, index=False)
        elif name == "summary.json":
            (local / name).write_text(json.dumps(run.summary or {"run": {"id": run_id}}))
        else:  # predictions/<subject>.nii.gz
            subject = Path(name).name.removesuffix(".nii.gz")
            if subject not in run.predictions:
                raise FileNotFoundError(name)
            target = local / Path(name).name
            target.write_bytes(run.predictions[subject].read_bytes())

    def parent_run(self, name: str) -> str:
        return "parent"

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.logged.append(path)


@pytest.fixture
def use_tracker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``use_tracker(tracker)``: ``bench report`` (and ``write_report``) read ``tracker`` instead of MLflow."""
    import bench.tracking.runs

    def install(tracker: FakeTracker) -> FakeTracker:
        monkeypatch.setattr(bench.tracking.runs, "existing_store", lambda uri=None, root=None: "fake://store")
        monkeypatch.setattr(bench.tracking.runs, "experiment_names", lambda uri: ["fake"])
        monkeypatch.setattr(bench.tracking.runs, "latest_experiment", lambda uri=None, root=None: "fake")
        monkeypatch.setattr(bench.tracking.runs, "Tracker", lambda name, uri=None, root=None: tracker)
        return tracker

    return install


def dice_table(values: Mapping[str, float], tissues: Sequence[str] = ("CSF", "GM", "WM")) -> dict[tuple[str, str], float]:
    """The same Dice for every tissue of each subject (``values``: subject -> Dice)."""
    return {(case, tissue): value for case, value in values.items() for tissue in tissues}


def subjects(n: int, start: int = 1) -> list[str]:
    return [f"IBSR_{i:02d}" for i in range(start, start + n)]


def test_a_rerun_of_the_same_settings_replaces_the_older_numbers(tmp_path: Path) -> None:
    # same row, seed and settings run twice (e.g. force=true): only the newest counts
    same = {"train.epochs": "100", "seed": "0"}
    tracker = FakeTracker([FakeRun("old", 1, {("IBSR_04", "CSF"): 0.2, ("IBSR_09", "CSF"): 0.2}, params=same),
                           FakeRun("new", 2, {("IBSR_04", "CSF"): 0.8, ("IBSR_09", "CSF"): 0.8}, params=same)])
    (result,) = collect(tracker, tmp_path)
    assert result.run_ids == ["new"]
    assert cell_stats(result, "dice", "CSF") == (0.8, 0.0, 2)
    assert set(result.key) == set(CONFIG_KEYS)
    assert result.folds == [""]  # no fold tag: one fold


def test_configurations_that_differ_in_any_setting_are_separate_rows_named_by_it(tmp_path: Path) -> None:
    # two row-9 configurations that differ only in sampling.region (and their seeds, which pool): both are shown
    def params(region: str, seed: str) -> dict[str, str]:
        return {"sampling.region": region, "train.epochs": "200", "seed": seed, "train.seed": seed,
                "env.host": f"host-{seed}"}

    dice = {("IBSR_04", "CSF"): 0.5}
    tracker = FakeTracker([FakeRun("a0", 1, dice, row="9", params=params("centre_in_brain", "0")),
                           FakeRun("a1", 2, dice, row="9", seed="1", params=params("centre_in_brain", "1")),
                           FakeRun("b0", 3, dice, row="9", params=params("overlaps_brain", "0"))])
    results = collect(tracker, tmp_path)
    assert [(r.variant, sorted(r.run_ids)) for r in results] == [
        ("sampling.region=centre_in_brain", ["a0", "a1"]), ("sampling.region=overlaps_brain", ["b0"])]
    assert "env.host" not in results[0].params and "seed" not in results[0].params
    frame = table_frame(results, ["dice"])
    table = markdown_table(frame, ["dice"], "t")
    assert "unet3d · sampling.region=overlaps_brain" in table and "unet3d · sampling.region=centre_in_brain" in table
    assert "≠" in table and "env.host: host-0, host-1" in table  # a0 and a1 ran on different hosts


def test_variants_with_the_same_tags_but_different_labels_are_separate_rows(tmp_path: Path) -> None:
    # an ablation: same model/loss/sampling tags, one setting off per run, told apart by the label only
    tracker = FakeTracker([FakeRun("on", 1, {("IBSR_04", "CSF"): 0.9}, row="", tags={"label": "recipe: all on"}),
                           FakeRun("off", 2, {("IBSR_04", "CSF"): 0.7}, row="",
                                   tags={"label": "recipe without augmentation"})])
    results = collect(tracker, tmp_path)
    assert sorted((r.label, r.run_ids[0]) for r in results) == [
        ("recipe without augmentation", "off"), ("recipe: all on", "on")]
    frame = table_frame(results, ["dice"])
    table = markdown_table(frame, ["dice"], "t")
    assert "| - | unet3d: recipe: all on |" in table and "| - | unet3d: recipe without augmentation |" in table


def test_seeds_of_one_configuration_are_averaged_over_seed_means(tmp_path: Path) -> None:
    two = ("IBSR_04", "IBSR_09")
    tracker = FakeTracker([FakeRun("a", 1, {(c, "CSF"): 0.5 for c in two}, seed="0"),
                           FakeRun("b", 2, {(c, "CSF"): 0.7 for c in two}, seed="1"),
                           FakeRun("c", 3, {(c, "CSF"): 0.9 for c in two}, seed="1")])
    (result,) = collect(tracker, tmp_path)
    assert sorted(result.run_ids) == ["a", "c"]
    mean, sd, n = cell_stats(result, "dice", "CSF")
    assert n == 2 and abs(mean - 0.7) < 1e-12
    assert abs(sd - pd.Series([0.5, 0.9]).std(ddof=1)) < 1e-12


def _stats(out: Path, name: str = "table1_stats.csv") -> pd.DataFrame:
    return pd.read_csv(out / name)


def test_report_tests_every_row_against_the_reference_with_exact_wilcoxon_and_holm(
    tmp_path: Path, use_tracker: Any
) -> None:
    cases = subjects(8)
    rng = np.random.default_rng(3)
    reference = dict(zip(cases, rng.uniform(0.80, 0.90, 8), strict=True))
    others = {row: dict(zip(cases, rng.uniform(0.70, 0.95, 8), strict=True)) for row in ("5", "6", "7")}
    others["5"] = {c: v - 0.05 - 0.001 * i for i, (c, v) in enumerate(reference.items())}  # clearly worse
    runs = [FakeRun("r9", 1, dice_table(reference), row="9")]
    runs += [FakeRun(f"r{row}", 2, dice_table(values), row=row) for row, values in others.items()]
    tracker = use_tracker(FakeTracker(runs))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    table = _stats(out)
    assert list(table.columns[:3]) == ["row", "model", "framework"]
    assert {"tissue", "metric", "n_subjects", "mean", "sd", "ci_low", "ci_high", "reference_row", "n_pairs",
            "statistic", "p", "p_holm", "method", "note"} <= set(table.columns)
    csf = table[table["tissue"] == "CSF"].set_index("row")
    assert (csf["reference_row"] == 9).all() and csf.loc[9, "note"] == "reference"
    expected_p = {}
    for row, values in others.items():
        x = np.array([values[c] for c in cases])
        y = np.array([reference[c] for c in cases])
        expected = sps.wilcoxon(x, y, method="exact")
        cell = csf.loc[int(row)]
        assert cell["n_pairs"] == 8 and cell["method"] == "exact"
        assert cell["statistic"] == pytest.approx(expected.statistic)
        assert cell["p"] == pytest.approx(expected.pvalue, rel=1e-12)
        expected_p[int(row)] = expected.pvalue
        # an independent bootstrap of the mean over the 8 subjects, drawn here with the report's seed
        rng_check = np.random.default_rng(BOOTSTRAP_SEED)
        means = [rng_check.choice(x, size=x.size, replace=True).mean() for _ in range(BOOTSTRAP_RESAMPLES)]
        assert cell["ci_low"] == pytest.approx(np.percentile(means, 2.5), abs=1e-12)
        assert cell["ci_high"] == pytest.approx(np.percentile(means, 97.5), abs=1e-12)
        # ... and scipy's own percentile bootstrap (other draws: agreement within Monte Carlo error)
        boot = sps.bootstrap((x,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(1)).confidence_interval
        assert abs(cell["ci_low"] - boot.low) < 0.2 * x.std() and abs(cell["ci_high"] - boot.high) < 0.2 * x.std()
        assert cell["mean"] == pytest.approx(x.mean()) and cell["sd"] == pytest.approx(x.std(ddof=1))
    # Holm by hand over the three tested rows: sort, multiply by m, m-1, ..., keep monotone, cap at 1
    order = sorted(expected_p, key=expected_p.__getitem__)
    running, holm = 0.0, {}
    for k, row_no in enumerate(order):
        running = max(running, min(1.0, (3 - k) * expected_p[row_no]))
        holm[row_no] = running
    for row_no, adjusted in holm.items():
        assert csf.loc[row_no, "p_holm"] == pytest.approx(adjusted, rel=1e-12)
    assert holm[5] < 0.05  # row 5 is worse on every subject: p = 2/256 exactly, times 3 rows

    markdown = (out / "table1.md").read_text()
    row5 = next(line for line in markdown.splitlines() if line.startswith("| 5 |"))
    row9 = next(line for line in markdown.splitlines() if line.startswith("| 9 |"))
    assert "] * (" in row5 and "] ref (" in row9
    assert "reference, row 9 (unet3d, torch)" in markdown and "Wilcoxon signed-rank" in markdown
    assert "8 paired subjects" in markdown and "Holm correction over the 3 tested configurations per tissue" in markdown
    table1 = pd.read_csv(out / "table1.csv").set_index("row")
    assert table1.loc[5, "dice_CSF_mark"] == "*" and table1.loc[9, "dice_CSF_mark"] == "ref"
    assert table1.loc[5, "dice_CSF_ci_low"] == pytest.approx(csf.loc[5, "ci_low"])
    # Table 2 gets the same treatment (AVD, HD)
    assert set(_stats(out, "table2_stats.csv")["metric"]) == {"avd", "hd"}
    expected_files = {"table1.md", "table1.csv", "table1_stats.csv", "table2.md", "table2.csv", "table2_stats.csv",
                      "boxplots.png", "ranking.png", "ranking.csv", "ranking_stability.csv",
                      "ranking_blobs.png", "ranking_significance.png"}
    assert expected_files <= {p.name for p in out.iterdir()}
    assert (out / "ranking.png").read_bytes()[:8] == PNG_MAGIC
    assert {p.name for p in tracker.logged} == expected_files  # no overlays: the fake runs have no subject files


def test_untestable_rows_say_why_instead_of_a_p_value(tmp_path: Path, use_tracker: Any) -> None:
    cases = subjects(6)
    reference = {c: 0.80 + 0.01 * i for i, c in enumerate(cases)}
    use_tracker(FakeTracker([
        FakeRun("r9", 1, dice_table(reference), row="9"),
        FakeRun("same", 2, dice_table(reference), row="8"),  # identical to the reference on every subject
        FakeRun("few", 3, dice_table({c: 0.5 for c in cases[:4]}), row="7"),  # 4 shared subjects
        FakeRun("ok", 4, dice_table({c: v + 0.02 * (-1) ** i * (i + 1) for i, (c, v) in enumerate(reference.items())}),
                row="6"),
    ]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    csf = _stats(out)
    csf = csf[csf["tissue"] == "CSF"].set_index("row")
    assert csf.loc[8, "note"] == "all paired differences are zero" and pd.isna(csf.loc[8, "p"])
    assert csf.loc[7, "note"] == "fewer than 5 paired subjects" and pd.isna(csf.loc[7, "p"])
    assert csf.loc[7, "n_pairs"] == 4
    assert csf.loc[6, "n_pairs"] == 6 and not pd.isna(csf.loc[6, "p_holm"])
    assert csf.loc[6, "p_holm"] == pytest.approx(csf.loc[6, "p"])  # a family of one tested row
    marks = pd.read_csv(out / "table1.csv").set_index("row")["dice_CSF_mark"]
    assert marks[8] == "=ref" and marks[7] == "n<5" and marks[9] == "ref"
    assert "4–6 paired subjects" in (out / "table1.md").read_text()


def test_a_missing_default_reference_row_is_reported_not_tested(tmp_path: Path, use_tracker: Any) -> None:
    use_tracker(FakeTracker([FakeRun("r5", 1, dice_table({c: 0.8 for c in subjects(5)}), row="5")]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    table = _stats(out)
    assert (table["note"] == "reference row not in this experiment").all() and table["p"].isna().all()
    assert (table["reference_row"] == 9).all()
    assert "No paired test: reference row 9 is not in this experiment (rows here: 5" in (out / "table1.md").read_text()


def test_reference_row_not_in_the_experiment_is_one_error_line_and_writes_nothing(
    tmp_path: Path, use_tracker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = use_tracker(FakeTracker([FakeRun("r5", 1, dice_table({c: 0.8 for c in subjects(5)}), row="5"),
                                       FakeRun("r9", 2, dice_table({c: 0.9 for c in subjects(5)}), row="9")]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out), "--reference", "42"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "42" in err[0] and "rows here: 5, 9" in err[0]
    assert not out.exists() and tracker.logged == []
    # --reference 5 exists: row 9 is tested against it
    assert bench_main(["report", "--out", str(out), "--reference", "5"]) == 0
    assert (_stats(out)["reference_row"] == 5).all()


def test_no_finished_runs_is_one_error_line(tmp_path: Path, use_tracker: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    use_tracker(FakeTracker([]))
    assert bench_main(["report", "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no finished runs" in err[0]
    assert not (tmp_path / "reports").exists()


def test_seeds_are_averaged_per_subject_before_bootstrap_and_test(tmp_path: Path, use_tracker: Any) -> None:
    cases = subjects(6)
    seed0 = {c: 0.70 + 0.02 * i for i, c in enumerate(cases)}
    seed1 = {c: 0.80 - 0.01 * i for i, c in enumerate(cases)}
    reference = {c: 0.75 + 0.003 * i ** 2 for i, c in enumerate(cases)}
    use_tracker(FakeTracker([FakeRun("s0", 1, dice_table(seed0), seed="0"),
                             FakeRun("s1", 2, dice_table(seed1), seed="1"),
                             FakeRun("r9", 3, dice_table(reference), row="9")]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    cell = _stats(out).query("row == 5 and tissue == 'GM'").iloc[0]
    averaged = np.array([(seed0[c] + seed1[c]) / 2 for c in cases])
    assert cell["n_subjects"] == 6 and cell["mean"] == pytest.approx(averaged.mean())
    assert cell["sd"] == pytest.approx(averaged.std(ddof=1))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = averaged[rng.integers(0, 6, size=(BOOTSTRAP_RESAMPLES, 6))].mean(axis=1)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    expected = sps.wilcoxon(averaged, np.array([reference[c] for c in cases]), method="exact")
    assert cell["p"] == pytest.approx(expected.pvalue) and cell["n_pairs"] == 6
    table1 = pd.read_csv(out / "table1.csv").set_index("row")
    assert table1.loc[5, "seeds"] == 2
    assert "averaged over the configuration's seeds" in (out / "table1.md").read_text()


def test_folds_pool_their_subjects_and_old_runs_without_a_fold_tag_still_report(
    tmp_path: Path, use_tracker: Any
) -> None:
    fold0 = {c: 0.8 + 0.01 * i for i, c in enumerate(subjects(3))}
    fold1 = {c: 0.7 + 0.02 * i for i, c in enumerate(subjects(3, start=4))}
    reference = {c: 0.85 for c in subjects(6)}  # an old run: no fold tag at all
    tracker = use_tracker(FakeTracker([
        FakeRun("f0", 1, dice_table(fold0), fold="0"), FakeRun("f1", 2, dice_table(fold1), fold="1"),
        FakeRun("f1-older", 0, dice_table({c: 0.1 for c in fold1}), fold="1", config_hash="h-old"),
        FakeRun("r9", 3, dice_table(reference), row="9", fold=None)]))
    (five, nine) = collect(tracker, tmp_path / "cache")
    assert sorted(five.run_ids) == ["f0", "f1"] and five.folds == ["0", "1"] and nine.folds == [""]
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    cell = _stats(out).query("row == 5 and tissue == 'WM'").iloc[0]
    pooled = np.array([*fold0.values(), *fold1.values()])
    assert cell["n_subjects"] == 6 and cell["n_pairs"] == 6 and cell["mean"] == pytest.approx(pooled.mean())
    assert cell["p"] == pytest.approx(sps.wilcoxon(pooled - 0.85, method="exact").pvalue)
    table1 = pd.read_csv(out / "table1.csv").set_index("row")
    assert table1.loc[5, "folds"] == 2 and table1.loc[5, "subjects"] == 6 and table1.loc[9, "folds"] == 1


def test_ranking_is_written_with_mean_ranks_over_shared_subjects(tmp_path: Path, use_tracker: Any) -> None:
    cases = subjects(5)
    use_tracker(FakeTracker([
        FakeRun("best", 1, dice_table({c: 0.9 for c in cases}), row="9"),
        FakeRun("mid", 2, dice_table({c: 0.8 for c in cases}), row="5"),
        FakeRun("worst", 3, dice_table({c: 0.7 for c in [*cases, "IBSR_18"]}), row="1"),  # IBSR_18: not shared
    ]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    assert (out / "ranking.png").read_bytes()[:8] == PNG_MAGIC
    ranks = pd.read_csv(out / "ranking.csv")
    csf = ranks[ranks["tissue"] == "CSF"].set_index("label")
    assert csf["mean_rank"].to_dict() == {"1: unet3d torch": 3.0, "5: unet3d torch": 2.0, "9: unet3d torch": 1.0}
    assert (csf["n_subjects"] == 5).all() and (csf["ci_low"] == csf["mean_rank"]).all()


def _write(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    return write_volume(Volume(array, spacing), path)


def test_overlays_are_written_cropped_with_an_error_map(tmp_path: Path, use_tracker: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shape, spacing = (40, 30, 36), (1.0, 1.5, 2.0)
    truth = np.zeros(shape, dtype=np.int16)
    truth[10:25, 8:20, 12:30] = 3
    truth[12:23, 10:18, 14:28] = 2
    truth[15:20, 12:16, 18:24] = 1
    image = truth.astype(np.float32) * 100 + 10
    prediction = truth.copy()
    prediction[10, 8:20, 12:30] = 0  # a one-voxel rim missed
    files = {"image": str(_write(tmp_path / "s.nii.gz", image, spacing)),
             "label": str(_write(tmp_path / "s_seg.nii.gz", truth, spacing))}
    summary = {"run": {"subject_files": {"IBSR_11": files}, "test_subjects": ["IBSR_11"]}}
    pred = _write(tmp_path / "pred.nii.gz", prediction, spacing)
    dice = dice_table({c: 0.8 for c in ["IBSR_11", *subjects(4)]})
    use_tracker(FakeTracker([FakeRun("a", 1, dice, row="9", summary=summary, predictions={"IBSR_11": pred}),
                             FakeRun("b", 2, dice, row="5", predictions={"IBSR_11": pred})]))
    figures: list[Any] = []
    save = report.plots.save_overlays

    def keep(fig: Any, path: Path) -> None:
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(report.plots, "save_overlays", keep)
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    assert (out / "overlays.png").read_bytes()[:8] == PNG_MAGIC
    (fig,) = figures
    axes = fig.axes
    assert len(axes) == 3 * 6  # ground truth + 2 configurations, 3 planes × (labels, errors)
    # the crop: the labels' box [10:25, 8:20, 12:30] plus 4 voxels, in mm; axial shows x (width) by y (height)
    width, height = (15 + 8) * 1.0, (12 + 8) * 1.5
    assert axes[0].images[0].get_extent() == pytest.approx([0, width, height, 0])
    assert fig.get_size_inches()[0] >= 6 * 3  # at least 3 inches per panel
    errors = axes[6 + 1].images[1].get_array()  # first configuration, axial errors
    assert errors[..., 3].max() > 0  # the missed rim is painted


def test_rows_that_did_not_converge_or_never_predict_a_class_are_marked(tmp_path: Path, use_tracker: Any) -> None:
    cases = subjects(6)
    values = {c: 0.8 for c in cases}
    unlearned = {"brainbench.convergence": "stopped_early", "brainbench.unlearned_classes": "CSF"}
    runs = [FakeRun("r9", 1, dice_table(values), row="9", tags={"brainbench.convergence": "plateaued"}),
            FakeRun("r3a", 2, dice_table({c: 0.0 for c in cases}), row="3", seed="0", tags=unlearned),
            FakeRun("r3b", 3, dice_table({c: 0.0 for c in cases}), row="3", seed="1", tags=unlearned),
            FakeRun("r5a", 4, dice_table(values), row="5", seed="0",
                    tags={"brainbench.convergence": "still_improving", "brainbench.unlearned_classes": "CSF"}),
            FakeRun("r5b", 5, dice_table(values), row="5", seed="1", tags={"brainbench.convergence": "stopped_early"})]
    use_tracker(FakeTracker(runs))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    lines = (out / "table1.md").read_text().splitlines()
    row3 = next(line for line in lines if line.startswith("| 3 |"))
    row5 = next(line for line in lines if line.startswith("| 5 † |"))
    row9 = next(line for line in lines if line.startswith("| 9 |"))
    csf3, gm3 = row3.split(" | ")[7:9]
    assert "∅" in csf3 and "∅1" not in csf3 and "∅" not in gm3  # both runs of row 3: CSF never predicted
    assert "∅1/2" in row5.split(" | ")[7]  # one of row 5's two runs
    assert "∅" not in row9 and "†" not in row9
    text = "\n".join(lines)
    assert "`†` after N: not converged" in text and "validation Dice was still 0" in text
    table = pd.read_csv(out / "table1.csv").set_index("row")
    assert table.loc[5, "not_converged"] == 1 and table.loc[9, "not_converged"] == 0
    assert table.loc[3, "dice_CSF_unlearned"] == 2 and table.loc[3, "dice_GM_unlearned"] == 0


def test_a_report_covers_one_split_and_names_the_runs_it_leaves_out(tmp_path: Path, use_tracker: Any) -> None:
    """Rows are compared on the same subjects: holdout runs and 5-fold runs never share a table."""
    folds = [FakeRun(f"f{k}", k, dice_table({c: 0.7 for c in subjects(2, 1 + 2 * k)}), fold=str(k),
                     config_hash=f"h{k}", tags={"split": f"fold{k}of5-seed0"}) for k in range(5)]
    holdout = FakeRun("h", 10, dice_table({c: 0.9 for c in subjects(3, 20)}), tags={"split": "holdout"})
    use_tracker(FakeTracker([*folds, holdout]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0  # the newest run's split: holdout
    table = pd.read_csv(out / "table1.csv")
    assert table["subjects"].tolist() == [3] and table["dice_CSF_mean"].tolist() == [pytest.approx(0.9)]
    assert "Split: holdout; left out: 5 runs of 5-fold (fold_seed 0)" in (out / "table1.md").read_text()
    assert bench_main(["report", "--out", str(out), "--split", "5-fold (fold_seed 0)"]) == 0
    table = pd.read_csv(out / "table1.csv")
    assert table["subjects"].tolist() == [10] and table["folds"].tolist() == [5]
    assert table["dice_CSF_mean"].tolist() == [pytest.approx(0.7)]
    assert bench_main(["report", "--out", str(tmp_path / "other"), "--split", "paper"]) == 2
    assert not (tmp_path / "other").exists()


def test_failed_rows_are_named_in_the_report_never_silently_missing(tmp_path: Path, use_tracker: Any) -> None:
    """Row 2 failed outright, row 6's newest run failed after an older one finished, row 7 failed and was rerun
    to the end: the table holds rows 5 and 6 (the older run) and the note names rows 2 and 6 only."""
    cases = subjects(3)
    runs = [FakeRun("r5", 1, dice_table({c: 0.9 for c in cases}), row="5"),
            FakeRun("r2", 2, {}, row="2", status="FAILED"),
            FakeRun("r6-old", 3, dice_table({c: 0.8 for c in cases}), row="6"),
            FakeRun("r6-new", 4, {}, row="6", status="KILLED"),
            FakeRun("r7-bad", 5, {}, row="7", status="FAILED"),
            FakeRun("r7", 6, dice_table({c: 0.85 for c in cases}), row="7")]
    use_tracker(FakeTracker(runs))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    assert pd.read_csv(out / "table1.csv")["row"].tolist() == [5, 6, 7]
    text = (out / "table1.md").read_text()
    assert "- row 2 (U-Net), seed 0: run r2 FAILED; not in the table" in text
    assert "- row 6 (U-Net), seed 0: run r6-new KILLED; an older finished run is shown" in text
    assert "r7-bad" not in text


# ---------------------------------------------------------------------------------------------- any label set

LESION = LabelSet(("background", "CSF", "GM", "WM", "lesion"), (0, 1, 2, 3, 10))
LESION_CLASSES = ("CSF", "GM", "WM", "lesion")


def dataset_summary(name: str, labels: LabelSet | None = None, **run: Any) -> dict[str, Any]:
    """A summary.json recording its dataset (``spec.data.name``) and, unless None, its label set."""
    summary: dict[str, Any] = {"run": run, "spec": {"data": {"name": name}}}
    if labels is not None:
        summary["labels"] = labels.record()
    return summary


def test_report_columns_follow_the_runs_label_set_without_the_paper(
    tmp_path: Path, use_tracker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = subjects(6)
    shape, spacing = (30, 24, 26), (1.0, 1.0, 1.2)
    truth = np.zeros(shape, dtype=np.uint8)
    truth[6:24, 4:20, 5:21] = 3
    truth[8:22, 6:18, 7:19] = 2
    truth[10:20, 8:16, 9:17] = 1
    truth[13:16, 11:13, 12:14] = 10
    files = {"image": str(_write(tmp_path / "s.nii.gz", truth.astype(np.float32) * 20 + 5, spacing)),
             "label": str(_write(tmp_path / "s_seg.nii.gz", truth, spacing))}
    pred = _write(tmp_path / "pred.nii.gz", np.where(truth == 10, 3, truth).astype(np.uint8), spacing)
    summary = dataset_summary("nnunet", LESION, subject_files={cases[0]: files}, test_subjects=cases)
    reference = {c: 0.80 + 0.01 * i for i, c in enumerate(cases)}
    runs = [FakeRun("r9", 1, dice_table(reference, LESION_CLASSES), row="9", summary=summary,
                    predictions={cases[0]: pred}),
            FakeRun("r5", 2, dice_table({c: v - 0.1 for c, v in reference.items()}, LESION_CLASSES), row="5",
                    summary=summary, predictions={cases[0]: pred},
                    tags={"brainbench.unlearned_classes": "lesion"})]
    use_tracker(FakeTracker(runs))
    figures: list[Any] = []
    save = report.plots.save_overlays

    def keep(fig: Any, path: Path) -> None:
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(report.plots, "save_overlays", keep)
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 0
    table1 = pd.read_csv(out / "table1.csv").set_index("row")
    assert [c.removesuffix("_mean") for c in table1.columns if c.endswith("_mean")] == [
        f"dice_{c}" for c in LESION_CLASSES]
    assert not [c for c in table1.columns if "paper" in c or c.endswith("_diff")]  # not IBSR18: no paper columns
    assert table1.loc[5, "dice_lesion_mean"] == pytest.approx(np.mean(list(reference.values())) - 0.1)
    assert table1.loc[5, "dice_lesion_unlearned"] == 1 and table1.loc[5, "dice_CSF_unlearned"] == 0
    assert table1.loc[5, "dice_lesion_mark"] == "*" and table1.loc[9, "dice_lesion_mark"] == "ref"
    table2 = pd.read_csv(out / "table2.csv")
    assert {f"{m}_{c}_mean" for m in ("avd", "hd") for c in LESION_CLASSES} <= set(table2.columns)
    markdown = (out / "table1.md").read_text()
    assert "| DICE CSF | DICE GM | DICE WM | DICE lesion |" in markdown
    assert "Cells: ours mean ± sd [95 % CI] mark." in markdown and "paper" not in markdown
    row5 = next(line for line in markdown.splitlines() if line.startswith("| 5 |"))
    assert row5.rstrip(" |").endswith("∅") and "∅" not in row5.split(" | ")[7]  # lesion marked, CSF not
    assert "Holm correction over the 1 tested configurations per class" in markdown
    assert set(_stats(out)["tissue"]) == set(LESION_CLASSES)
    assert pd.read_csv(out / "ranking.csv")["tissue"].unique().tolist() == list(LESION_CLASSES)
    for png in ("boxplots.png", "ranking.png", "overlays.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    (figure,) = figures
    assert [t.get_text() for t in figure.legends[0].get_texts()][:4] == list(LESION_CLASSES)


def test_the_paper_appears_only_for_ibsr18_or_its_synthetic_stand_in_with_the_paper_labels(tmp_path: Path) -> None:
    values = dice_table({c: 0.9 for c in subjects(5)})
    for name, labels, shown in (("ibsr18", IBSR_LABELS, True), ("ibsr18", None, True), ("synthetic", IBSR_LABELS, True),
                                ("nnunet", IBSR_LABELS, False), ("mydata", IBSR_LABELS, False)):
        tracker = FakeTracker([FakeRun("r", 1, values, row="5", summary=dataset_summary(name, labels))])
        frame = table_frame(collect(tracker, tmp_path / name), ["dice"])
        assert ("dice_CSF_paper" in frame) == shown and ("paper_model" in frame) == shown, name
        if shown:
            paper = paper_value("dice", 5, "CSF")
            assert paper is not None and frame.loc[0, "dice_CSF_paper"] == paper
            assert frame.loc[0, "dice_CSF_diff"] == pytest.approx(0.9 - paper)
            assert frame.loc[0, "paper_model"] == "Basic 3D UNet"
    # IBSR18's subjects relabelled with a lesion: not the paper's classes
    lesion = FakeTracker([FakeRun("r", 1, dice_table({c: 0.9 for c in subjects(5)}, LESION_CLASSES), row="5",
                                  summary=dataset_summary("ibsr18", LESION))])
    frame = table_frame(collect(lesion, tmp_path / "lesion"), ["dice"])
    assert "dice_lesion_mean" in frame and not [c for c in frame.columns if "paper" in c]
    # a report of IBSR18 and other rows: paper columns, filled for the IBSR18 row only
    both = FakeTracker([FakeRun("a", 1, values, row="5", summary=dataset_summary("ibsr18", IBSR_LABELS)),
                        FakeRun("b", 2, values, row="9", summary=dataset_summary("mydata", IBSR_LABELS))])
    frame = table_frame(collect(both, tmp_path / "both"), ["dice"]).set_index("row")
    assert frame.loc[5, "dice_GM_paper"] == paper_value("dice", 5, "GM") and pd.isna(frame.loc[9, "dice_GM_paper"])
    table = markdown_table(frame.reset_index(), ["dice"], "t")
    assert "(paper, ours − paper)" in table and "(0.937, -0.037)" in table


def test_runs_of_different_label_sets_are_refused_with_one_error_line(
    tmp_path: Path, use_tracker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = subjects(5)
    tracker = use_tracker(FakeTracker([
        FakeRun("ibsr", 1, dice_table({c: 0.9 for c in cases}), row="9", summary=dataset_summary("ibsr18")),
        FakeRun("lesion", 2, dice_table({c: 0.8 for c in cases}, LESION_CLASSES), row="5",
                summary=dataset_summary("nnunet", LESION))]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the runs to report use 2 different label sets")
    assert "{0 background, 1 CSF, 2 GM, 3 WM} in row 9 (unet3d, torch)" in err[0]
    assert "{0 background, 1 CSF, 2 GM, 3 WM, 10 lesion} in row 5 (unet3d, torch)" in err[0]
    assert "bench report --experiment" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [".artifacts"] and tracker.logged == []  # no report file


def test_per_subject_classes_outside_the_label_set_are_refused(tmp_path: Path, use_tracker: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # one label set recorded, but a run of the configuration logged a lesion class: its runs mix label sets
    cases = subjects(5)
    use_tracker(FakeTracker([
        FakeRun("a", 1, dice_table({c: 0.9 for c in cases}), seed="0", summary=dataset_summary("ibsr18")),
        FakeRun("b", 2, dice_table({c: 0.9 for c in cases}, LESION_CLASSES), seed="1")]))
    assert bench_main(["report", "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip()
    assert "classes ['lesion']" in err and "0 background, 1 CSF, 2 GM, 3 WM" in err
