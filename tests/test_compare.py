"""bench.evaluation.compare / ``bench compare --axis``: pairs of configurations that differ in one setting, their
paired differences, tests and verdicts checked against scipy/numpy computed here (a planted store: the fake
tracker of tests/test_report.py; no training, no MLflow)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.cli import main as bench_main
from bench.errors import ConfigError
from bench.evaluation.compare import find_pairs, resolve_axis
from bench.evaluation.runs import collect
from bench.evaluation.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from tests.test_report import PNG_MAGIC, FakeRun, FakeTracker, dice_table, subjects
from tests.test_report import use_tracker as use_tracker  # the fixture

CASES = subjects(8)
TISSUES = ("CSF", "GM", "WM")


def settings(**changed: str) -> dict[str, str]:
    """A run's params: one configuration's settings, ``changed`` applied (seed and train.seed move together)."""
    params = {"framework": "torch", "train.precision": "fp32", "train.optimizer.name": "adam",
              "train.optimizer.lr": "0.001", "sampling.region": "centre_in_brain", "model.params.base_filters": "8",
              "seed": "0", "env.host": "node-1"}
    params.update(changed)
    params["train.seed"] = params["seed"]
    return params


def per_tissue(values: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """Each subject's Dice per tissue: ``values`` for CSF, shifted for GM and WM (so the classes differ)."""
    return {(case, tissue): value + shift for case, value in values.items()
            for tissue, shift in zip(TISSUES, (0.0, 0.03, 0.05), strict=True)}


def bootstrap(d: np.ndarray) -> tuple[float, float]:
    """A percentile bootstrap of the mean drawn here, with the report's seed and resample count."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = [rng.choice(d, size=d.size, replace=True).mean() for _ in range(BOOTSTRAP_RESAMPLES)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=p.__getitem__)
    out, running = [0.0] * len(p), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[index]))
        out[index] = running
    return out


def test_precision_pairs_match_an_independent_computation(tmp_path: Path, use_tracker: Any,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Three precisions of one configuration: three pairs; bf16 is clearly worse, fp16 ≈ fp32 (tiny
    differences). fp32 ran two seeds, the others seed 0: seeds are matched, so fp32's seed 1 is left out of the
    differences (and named); its costs are medians over both runs."""
    rng = np.random.default_rng(7)
    base = dict(zip(CASES, rng.uniform(0.78, 0.88, len(CASES)), strict=True))
    bf16 = {c: v - 0.05 - 0.002 * i for i, (c, v) in enumerate(base.items())}
    fp16 = {c: v + 0.0003 * (i + 1) * (-1) ** i for i, (c, v) in enumerate(base.items())}
    seeds = ({c: v - 0.004 for c, v in base.items()}, {c: v + 0.004 for c, v in base.items()})
    cost = {"patches_per_s": 100.0, "seconds_per_volume": 3.0, "peak_memory_mb": 900.0}
    tracker = use_tracker(FakeTracker([
        FakeRun("fp32-0", 1, per_tissue(seeds[0]), row="9", params=settings(),
                metrics={**cost, "fit_seconds": 600.0}),
        FakeRun("fp32-1", 2, per_tissue(seeds[1]), row="9", seed="1", params=settings(seed="1"),
                metrics={**cost, "fit_seconds": 720.0, "patches_per_s": 120.0}),
        FakeRun("bf16", 3, per_tissue(bf16), row="9", params=settings(**{"train.precision": "bf16"}),
                metrics={"fit_seconds": 330.0, "patches_per_s": 220.0, "seconds_per_volume": 2.0,
                         "peak_memory_mb": 500.0}),
        FakeRun("fp16", 4, per_tissue(fp16), row="9", params=settings(**{"train.precision": "fp16"}))]))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "profile.precision", "--out", str(out)]) == 0  # the Hydra path
    names = {"compare-train.precision.md", "compare-train.precision.csv", "compare-train.precision.png"}
    assert names <= {p.name for p in out.iterdir()} and {p.name for p in tracker.logged} == names
    assert (out / "compare-train.precision.png").read_bytes()[:8] == PNG_MAGIC
    printed = capsys.readouterr().out
    assert (out / "compare-train.precision.md").read_text() in printed

    table = pd.read_csv(out / "compare-train.precision.csv")
    assert table[["a_value", "b_value"]].drop_duplicates().values.tolist() == [
        ["bf16", "fp16"], ["bf16", "fp32"], ["fp16", "fp32"]]  # three pairs, each in axis order
    values = {"bf16": bf16, "fp16": fp16, "fp32": seeds[0]}  # seed 0, the one every side ran
    for shift, tissue in zip((0.0, 0.03, 0.05), TISSUES, strict=True):
        rows = table[table["class"] == tissue].sort_values("pair")
        expected_p = []
        for (_, row), (a, b) in zip(rows.iterrows(), [("bf16", "fp16"), ("bf16", "fp32"), ("fp16", "fp32")],
                                    strict=True):
            d = np.array([(values[b][c] + shift) - (values[a][c] + shift) for c in CASES])
            assert row["n"] == 8 and row["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
            low, high = bootstrap(d)
            assert row["ci_low"] == pytest.approx(low, abs=1e-12) and row["ci_high"] == pytest.approx(high, abs=1e-12)
            two_sided = sps.wilcoxon(d, method="exact")
            assert row["method"] == "exact" and row["p"] == pytest.approx(two_sided.pvalue, rel=1e-12)
            assert row["statistic"] == pytest.approx(two_sided.statistic)
            lower = sps.wilcoxon(d + 0.01, alternative="greater", method="exact").pvalue
            upper = sps.wilcoxon(d - 0.01, alternative="less", method="exact").pvalue
            assert row["p_tost_lower"] == pytest.approx(lower, rel=1e-12)
            assert row["p_tost_upper"] == pytest.approx(upper, rel=1e-12)
            assert row["p_tost"] == pytest.approx(max(lower, upper), rel=1e-12) and row["tost_method"] == "exact"
            expected_p.append(two_sided.pvalue)
        # Holm over the three pairs of this metric and class
        assert rows["p_holm"].tolist() == pytest.approx(holm_by_hand(expected_p), rel=1e-12)
        assert rows["verdict"].tolist() == ["different", "different", "equivalent"]
    assert (table["margin"] == 0.01).all() and set(table["metric"]) == {"dice"}

    costs = table.drop_duplicates("pair").set_index("pair")
    assert costs.loc[2, "a_fit_minutes"] == pytest.approx(330 / 60)
    assert costs.loc[2, "b_fit_minutes"] == pytest.approx(660 / 60)  # median of 600 s and 720 s
    assert costs.loc[2, "ratio_fit_minutes"] == pytest.approx(660 / 330)
    assert costs.loc[2, "b_patches_per_s"] == pytest.approx(110.0) and costs.loc[2, "ratio_patches_per_s"] == 0.5
    assert costs.loc[2, "b_runs"] == 2 and pd.isna(costs.loc[1, "b_seconds_per_volume"])  # fp16 logged no cost
    markdown = (out / "compare-train.precision.md").read_text()
    assert "| 2 | row 9 unet3d torch: bf16 → fp32 | CSF | 8 |" in markdown
    assert ("| 2 | row 9 unet3d torch: bf16 → fp32 | 1 → 2 | 0 (B also ran 1: left out) | 220 → 110 (×0.50) | "
            "5.50 → 11.0 (×2.00) |") in markdown
    assert table.drop_duplicates("pair")["seeds"].tolist() == ["0", "0 (B also ran 1: left out)",
                                                               "0 (B also ran 1: left out)"]
    assert "Not compared" not in markdown and "Holm: over the 3 tested pairs of each metric and class" in markdown


def test_framework_orders_tf_before_torch_and_names_a_configuration_without_partner(
    tmp_path: Path, use_tracker: Any
) -> None:
    """tf then torch (d = torch − tf); zero and tied differences use the exhaustive sign flips; row 5 has no tf run."""
    torch = {c: 0.80 + 0.01 * i for i, c in enumerate(CASES)}
    gaps = [0.0, 0.02, -0.02, 0.03, 0.04, 0.05, 0.06, 0.07]  # a zero, a tie in |d|
    tf = {c: torch[c] - gap for c, gap in zip(CASES, gaps, strict=True)}
    use_tracker(FakeTracker([
        FakeRun("torch9", 1, dice_table(torch), row="9", params=settings()),
        FakeRun("tf9", 2, dice_table(tf), row="9", params=settings(framework="tf"), tags={"framework": "tf"}),
        FakeRun("torch5", 3, dice_table(torch), row="5",
                params=settings(**{"train.optimizer.lr": "0.1", "model.params.base_filters": "16"}))]))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "framework", "--metric", "hd", "--metric", "dice", "--margin", "0.5",
                       "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare-framework.csv")
    assert table["pair"].unique().tolist() == [1] and (table["a_value"] == "tf").all()
    csf = table[(table["class"] == "CSF")].set_index("metric")
    d = np.array([torch[c] - tf[c] for c in CASES])
    assert csf.loc["dice", "mean_diff"] == pytest.approx(d.mean())  # torch − tf
    expected = sps.wilcoxon(d, zero_method="wilcox", method=sps.PermutationMethod(n_resamples=2**13))
    assert csf.loc["dice", "method"] == "permutation, exhaustive"
    assert csf.loc["dice", "p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert "1 zero differences dropped" in csf.loc["dice", "note"]
    # hd = 10 (1 − dice) in the fake runs: its differences are −10 d, with the margin given (hd first)
    assert csf.loc["hd", "margin"] == 0.5 and csf.loc["dice", "margin"] == 0.01
    assert csf.loc["hd", "mean_diff"] == pytest.approx(-10 * d.mean())
    assert table["verdict"].isin(["equivalent", "different", "inconclusive"]).all()
    markdown = (out / "compare-framework.md").read_text()
    assert "A and B in the order tf, torch, so every difference is B − A (torch − tf)" in markdown
    assert markdown.index("#### HD:") < markdown.index("#### DICE:")
    assert ("- row 5 (unet3d, torch) has no configuration that differs only in framework: the closest, row 9 "
            "(unet3d, tf) (framework=tf), also differs in model.params.base_filters (16 vs 8), train.optimizer.lr "
            "(0.1 vs 0.001)") in markdown


def test_seeds_are_matched_and_a_subjects_value_is_its_mean_over_the_shared_seeds(tmp_path: Path,
                                                                                  use_tracker: Any) -> None:
    """torch ran seeds 0, 1, 2 and tf seeds 0, 1: seed by seed, torch's seed 2 is left out, and each side's value
    is its mean over seeds 0 and 1 (the seed-2 run is far off, so including it would move every number)."""
    rng = np.random.default_rng(3)
    torch = [{c: v for c, v in zip(CASES, rng.uniform(0.75, 0.9, len(CASES)), strict=True)} for _ in range(3)]
    torch[2] = {c: 0.2 for c in CASES}
    tf = [{c: v - 0.001 * (i + 1) for i, (c, v) in enumerate(t.items())} for t in torch[:2]]
    runs = [FakeRun(f"torch{k}", k, dice_table(torch[k]), row="5", seed=str(k), params=settings(seed=str(k)))
            for k in range(3)]
    runs += [FakeRun(f"tf{k}", 10 + k, dice_table(tf[k]), row="5", seed=str(k),
                     params=settings(framework="tf", seed=str(k)), tags={"framework": "tf"}) for k in range(2)]
    use_tracker(FakeTracker(runs))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "framework", "--out", str(out)]) == 0
    csf = pd.read_csv(out / "compare-framework.csv").query("`class` == 'CSF'").iloc[0]
    d = np.array([(torch[0][c] + torch[1][c]) / 2 - (tf[0][c] + tf[1][c]) / 2 for c in CASES])  # torch − tf
    assert csf["mean_diff"] == pytest.approx(d.mean(), abs=1e-12) and csf["n"] == 8
    assert csf["p"] == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    assert csf["seeds"] == "0, 1 (B also ran 2: left out)"
    assert "| 2 → 3 | 0, 1 (B also ran 2: left out) |" in (out / "compare-framework.md").read_text()


def test_configurations_without_a_seed_in_common_use_all_their_seeds(tmp_path: Path, use_tracker: Any) -> None:
    base = {c: 0.8 + 0.01 * i for i, c in enumerate(CASES)}
    use_tracker(FakeTracker([
        FakeRun("torch0", 1, dice_table(base), row="5", params=settings()),
        FakeRun("torch1", 2, dice_table({c: v + 0.01 for c, v in base.items()}), row="5", seed="1",
                params=settings(seed="1")),
        FakeRun("tf2", 3, dice_table({c: v - 0.02 for c, v in base.items()}), row="5", seed="2",
                params=settings(framework="tf", seed="2"), tags={"framework": "tf"})]))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "framework", "--out", str(out)]) == 0
    csf = pd.read_csv(out / "compare-framework.csv").query("`class` == 'CSF'").iloc[0]
    assert csf["mean_diff"] == pytest.approx(0.005 + 0.02) and csf["seeds"] == "2 vs 0, 1"


def test_axis_seed_pairs_the_seeds_of_one_configuration(tmp_path: Path, use_tracker: Any) -> None:
    runs = [FakeRun(f"s{seed}", seed, dice_table({c: 0.8 + 0.01 * i + 0.0005 * seed * (i + 1)
                                                 for i, c in enumerate(CASES)}),
                    row="9", seed=str(seed), params=settings(seed=str(seed))) for seed in range(3)]
    use_tracker(FakeTracker(runs))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "seed", "--out", str(out)]) == 0
    table = pd.read_csv(out / "compare-seed.csv")
    csf = table[table["class"] == "CSF"]
    assert csf[["a_value", "b_value"]].values.tolist() == [[0, 1], [0, 2], [1, 2]]
    for _, row in csf.iterrows():
        gap = row["b_value"] - row["a_value"]
        assert row["mean_diff"] == pytest.approx(0.0005 * gap * np.mean(np.arange(1, 9)))
        # every subject better with the later seed (Holm p < 0.05), but by less than the 0.01 margin: equivalent
        assert row["p_holm"] < 0.05 and row["verdict"] == "equivalent"
    assert "row 9 unet3d torch: 0 → 1" in (out / "compare-seed.md").read_text()


def test_an_unknown_axis_or_no_pair_is_one_error_line(tmp_path: Path, use_tracker: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    use_tracker(FakeTracker([FakeRun("a", 1, dice_table({c: 0.8 for c in CASES}), row="9", params=settings()),
                             FakeRun("b", 2, dice_table({c: 0.7 for c in CASES}), row="5",
                                     params=settings(**{"train.optimizer.lr": "0.1"}))]))
    out = tmp_path / "reports"
    assert bench_main(["compare", "--axis", "framwork", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --axis 'framwork': no run of this experiment records")
    assert "closest recorded settings: framework" in err[0]
    assert bench_main(["compare", "--axis", "sampling.region", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every configuration has sampling.region centre_in_brain" in err[0]
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith("compare-")]
    assert bench_main(["compare", "--axis", "framework", "--margin", "-1", "--out", str(out)]) == 2
    assert "--margin -1.0: the equivalence margin must be a positive number" in capsys.readouterr().err


def test_hydra_paths_resolve_to_recorded_settings() -> None:
    recorded = ["framework", "seed", "train.seed", "train.precision", "train.epochs", "train.optimizer.lr",
                "train.optimizer.name", "train.loss.name", "sampling.patch_size", "model.params.base_filters",
                "model.architecture", "sampling.region"]
    for given, setting in (("profile.precision", "train.precision"), ("optimizer.lr", "train.optimizer.lr"),
                           ("loss.name", "train.loss.name"), ("profile.epochs", "train.epochs"),
                           ("profile.patch_size", "sampling.patch_size"),
                           ("model.base_filters", "model.params.base_filters"), ("sampling.region", "sampling.region")):
        assert resolve_axis(given, recorded).keys == (setting,), given
    assert resolve_axis("train.seed", recorded).keys == ("seed", "train.seed")
    assert resolve_axis("framework.name", recorded).keys[0] == "framework"
    optimizer = resolve_axis("optimizer", recorded)
    assert optimizer.group and optimizer.keys == ("train.optimizer.lr", "train.optimizer.name")
    with pytest.raises(ConfigError, match=r"closest recorded settings: train\.precision"):
        resolve_axis("train.precison", recorded)


def test_report_axis_appends_the_comparison_to_table1(tmp_path: Path, use_tracker: Any) -> None:
    torch = {c: 0.80 + 0.01 * i for i, c in enumerate(CASES)}
    tracker = use_tracker(FakeTracker([
        FakeRun("torch9", 1, dice_table(torch), row="9", params=settings()),
        FakeRun("tf9", 2, dice_table({c: v - 0.0002 * (i + 1) for i, (c, v) in enumerate(torch.items())}), row="9",
                params=settings(framework="tf"), tags={"framework": "tf"})]))
    out = tmp_path / "reports"
    assert bench_main(["report", "--axis", "framework", "--out", str(out)]) == 0
    table1 = (out / "table1.md").read_text()
    assert table1.index("### Table 1: Dice") < table1.index("### Compared along framework — experiment fake")
    assert "| 1 | row 9 unet3d: tf → torch | CSF | 8 |" in table1 and "| equivalent |" in table1
    files = {"compare-framework.md", "compare-framework.csv", "compare-framework.png"}
    assert files <= {p.name for p in out.iterdir()} and files <= {p.name for p in tracker.logged}
    assert (out / "compare-framework.md").read_text() in table1


def test_numeric_settings_pair_in_numeric_order(tmp_path: Path) -> None:
    runs = [FakeRun(f"w{width}", k, dice_table({c: 0.8 + 0.001 * width for c in CASES}), row="9",
                    params=settings(**{"model.params.base_filters": str(width)}))
            for k, width in enumerate((16, 8, 32))]
    results = collect(FakeTracker(runs), tmp_path)
    axis = resolve_axis("model.base_filters", [k for r in results for k in r.params])
    pairs, unpaired = find_pairs(results, axis)
    assert [(p.a_value, p.b_value) for p in pairs] == [("8", "16"), ("8", "32"), ("16", "32")] and not unpaired
    assert pairs[0].label == "row 9 unet3d torch: 8 → 16"
