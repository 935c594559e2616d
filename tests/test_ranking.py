"""bench.evaluation.ranking: ranks, bootstrap rank frequencies, Kendall's τ and the pairwise map against hand
computations, scipy and a recomputation of the same seeded draws; the figures and the files written."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.errors import ConfigError
from bench.evaluation import plots, ranking

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CASES = ("s0", "s1", "s2", "s3")


def table(values: dict[str, float], tissue: str = "CSF", metric: str = "dice") -> pd.DataFrame:
    return pd.DataFrame([{"seed": "0", "case": c, "class": tissue, metric: v} for c, v in values.items()])


def hand_ranks(means: list[float], higher_is_better: bool = True) -> list[float]:
    """1 + how many are better + half of how many others tie."""
    sign = 1 if higher_is_better else -1
    return [1 + sum(sign * o > sign * m for o in means) + 0.5 * (sum(o == m for o in means) - 1) for m in means]


# A constant 0.5; B 1 on s0, 0 elsewhere; C a constant 0.25. Exact binary fractions: ties are exact.
HAND = pd.DataFrame({"A": [0.5] * 4, "B": [1.0, 0.0, 0.0, 0.0], "C": [0.25] * 4}, index=list(CASES))


def test_rank_by_mean_with_average_ranks_for_ties_and_the_direction_flag() -> None:
    assert ranking.rank_configurations(HAND).tolist() == [1.0, 2.5, 2.5]  # B and C tie on 0.25: ranks 2 and 3
    assert ranking.rank_configurations(HAND, higher_is_better=False).tolist() == [3.0, 1.5, 1.5]
    values = pd.DataFrame({"x": [1.0, 3.0], "y": [2.0, 2.0], "z": [2.0, 2.0], "w": [0.0, 1.0]})
    assert ranking.rank_configurations(values).tolist() == [2.0, 2.0, 2.0, 4.0]  # three tie for ranks 1-3
    assert ranking.rank_configurations(values).tolist() == hand_ranks([2.0, 2.0, 2.0, 0.5])


def test_rank_frequency_and_kendall_tau_over_every_resample_equal_a_hand_count() -> None:
    draws = np.array(list(itertools.product(range(4), repeat=4)))  # all 4**4 resamples, each once
    s = ranking.stability(HAND, "dice", "CSF", draws)
    # k = times s0 is drawn, P(k) = C(4,k) 3**(4-k) / 256: 81, 108, 54, 12, 1. B's mean is k/4, against A 0.5, C 0.25:
    # k >= 3: B, A, C;  k = 2: A = B (1.5), C;  k = 1: A, B = C (2.5);  k = 0: A, C, B. A tie splits its resample.
    expected = np.array([[189 + 27, 13 + 27, 0], [13 + 27, 27 + 54, 54 + 81], [0, 54 + 81, 13 + 54 + 54]]) / 256
    assert s.frequency.to_numpy() == pytest.approx(expected, abs=1e-15)
    assert s.frequency.columns.tolist() == [1, 2, 3] and s.frequency.index.tolist() == ["A", "B", "C"]
    # τ-b against the full ranking (1, 2.5, 2.5): k >= 3 -> 0, k = 2 -> 1/2, k = 1 -> 1, k = 0 -> 2/sqrt(6)
    tau = (13 * 0 + 54 * 0.5 + 108 * 1 + 81 * 2 / np.sqrt(6)) / 256
    summary = s.tau_summary()
    assert summary["tau_mean"] == pytest.approx(tau) and summary["tau_undefined"] == 0
    assert summary["tau_median"] == pytest.approx(2 / np.sqrt(6))  # the 128th/129th of the sorted τ: k = 0 ranks
    assert s.full_rank.tolist() == [1.0, 2.5, 2.5] and s.order == ["A", "B", "C"]
    assert s.median_rank.tolist() == [1.0, 2.5, 2.5]
    assert s.rank_low["A"] == 1.0 and s.rank_high["B"] == 3.0 and s.rank_low["C"] == 2.0


def test_seeded_bootstrap_equals_a_recomputation_of_the_same_draws() -> None:
    values = {"A": [0.81, 0.74, 0.90, 0.66, 0.78], "B": [0.79, 0.80, 0.85, 0.70, 0.60],
              "C": [0.70, 0.72, 0.88, 0.75, 0.71]}
    cases = [f"c{i}" for i in range(5)]
    tables = [table(dict(zip(cases, v, strict=True))) for v in values.values()]
    [s] = ranking.ranking_stability(tables, list(values), "dice", resamples=9, seed=7)
    draws = np.random.default_rng(7).integers(0, 5, size=(9, 5))
    matrix = np.array(list(values.values())).T  # subjects × configurations
    full = hand_ranks(list(matrix.mean(axis=0)))
    boot = [hand_ranks(list(matrix[d].mean(axis=0))) for d in draws]
    counts = np.zeros((3, 3))
    for ranks in boot:  # a tie of g configurations at average rank r spans r - (g-1)/2 .. r + (g-1)/2
        for c, r in enumerate(ranks):
            g = ranks.count(r)
            for position in range(int(r - (g - 1) / 2), int(r + (g - 1) / 2) + 1):
                counts[c, position - 1] += 1 / g
    assert s.full_rank.tolist() == full
    assert s.frequency.to_numpy() == pytest.approx(counts / 9, abs=1e-15)
    taus = [sps.kendalltau(full, ranks).statistic for ranks in boot]
    assert s.tau == pytest.approx(taus, abs=1e-15)
    assert s.tau_summary()["tau_low"] == pytest.approx(np.percentile(taus, 2.5))
    assert s.median_rank.tolist() == pytest.approx(np.median(boot, axis=0).tolist())
    again = ranking.ranking_stability(tables, list(values), "dice", resamples=9, seed=7)[0]
    assert np.array_equal(again.tau, s.tau)  # reproducible


def test_the_direction_flips_the_ranking_for_hd() -> None:
    values = {"A": [0.5, 0.5, 0.5, 0.5], "B": [1.0, 0.0, 0.0, 0.0], "C": [0.25, 0.5, 0.5, 0.75]}
    for metric in ("dice", "hd"):
        tables = [table(dict(zip(CASES, v, strict=True)), metric=metric) for v in values.values()]
        [s] = ranking.ranking_stability(tables, list(values), metric, resamples=20, seed=1)
        if metric == "dice":
            dice = s
    assert not s.higher_is_better and dice.higher_is_better
    assert dice.full_rank.tolist() == [1.5, 3.0, 1.5] and s.full_rank.tolist() == [2.5, 1.0, 2.5]
    assert dice.order[-1] == "B" and s.order[0] == "B"
    assert s.frequency.to_numpy() == pytest.approx(dice.frequency.to_numpy()[:, ::-1])  # same draws, mirrored


def hand_holm(p: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    ordered = sorted(p, key=p.get)  # type: ignore[arg-type]
    out, running = {}, 0.0
    for step, pair in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - step) * p[pair]))
        out[pair] = running
    return out


def test_pairwise_map_is_scipys_one_sided_wilcoxon_with_a_hand_holm() -> None:
    values = pd.DataFrame({"A": [0.91, 0.88, 0.93, 0.87, 0.95, 0.90, 0.92],
                           "B": [0.80, 0.84, 0.79, 0.86, 0.83, 0.81, 0.85],
                           "C": [0.811, 0.828, 0.803, 0.856, 0.845, 0.804, 0.867]})
    for higher, alternative in ((True, "greater"), (False, "less")):
        p, p_holm = ranking.pairwise_wilcoxon(values, higher)
        raw = {(i, j): sps.wilcoxon(values[i] - values[j], alternative=alternative, method="exact").pvalue
               for i in "ABC" for j in "ABC" if i != j}
        for (i, j), expected in hand_holm(raw).items():
            assert p.loc[i, j] == pytest.approx(raw[(i, j)], rel=1e-12)
            assert p_holm.loc[i, j] == pytest.approx(expected, rel=1e-12)
        assert np.isnan(np.diag(p.to_numpy())).all() and np.isnan(np.diag(p_holm.to_numpy())).all()
    s = ranking.stability(values, "dice", "CSF", ranking.resample_indices(7, 10, 0))
    assert s.p_holm.loc["A", "B"] == pytest.approx(6 * 2**-7)  # 7 of 7 wins: exact p 1/128, smallest of six
    assert s.significant.loc["A"].tolist() == [False, True, True] and not s.significant.loc[["B", "C"]].any().any()


def test_pairwise_ties_and_zeros_follow_scipys_auto_and_equal_configurations_get_p_one() -> None:
    diff = np.array([0.25, 0.25, -0.5, 0.0, 0.75, 1.0])  # a zero and a tie: exhaustive sign flips
    p, method = ranking.one_sided_wilcoxon(diff, "greater")
    assert method == "permutation, exhaustive"
    assert p == pytest.approx(sps.wilcoxon(diff, alternative="greater", zero_method="wilcox", method="auto").pvalue)
    assert ranking.one_sided_wilcoxon(np.zeros(5), "less") == (1.0, "all differences zero")


def test_subjects_not_tested_by_every_configuration_are_left_out_and_named() -> None:
    a = table({"s0": 0.9, "s1": 0.8, "s2": 0.7, "s3": 0.6, "s9": 0.1})
    b = table({"s0": 0.8, "s1": 0.7, "s2": 0.6, "s3": np.inf})  # s3's value is not finite
    c = table({"s0": 0.7, "s1": 0.6, "s2": 0.5, "s3": 0.4, "s9": 0.2})
    [s] = ranking.ranking_stability([a, b, c], ["A", "B", "C"], "dice", resamples=5, seed=0)
    assert s.subjects == ("s0", "s1", "s2") and s.left_out == ("s3", "s9")
    assert "s3 (not in B)" in s.note and "s9 (not in B)" in s.note
    assert s.mean.tolist() == pytest.approx([0.8, 0.7, 0.6])
    frame = ranking.stability_frame([s])
    assert set(frame["left_out"]) == {"s3; s9"}


def test_the_mean_ranking_averages_each_subjects_classes() -> None:
    def two(gm: list[float], wm: list[float]) -> pd.DataFrame:
        return pd.concat([table(dict(zip(CASES, gm, strict=True)), "GM"),
                          table(dict(zip(CASES, wm, strict=True)), "WM")])

    tables = [two([0.9] * 4, [0.5] * 4), two([0.8] * 4, [0.7] * 4)]  # A best on GM, B on WM and on the mean
    found = ranking.ranking_stability(tables, ["A", "B"], "dice", resamples=5, seed=0)
    assert [s.tissue for s in found] == ["GM", "WM", ranking.MEAN_CLASS]
    assert [s.order[0] for s in found] == ["A", "B", "B"]
    assert found[2].mean.tolist() == pytest.approx([0.7, 0.75])
    assert [s.tissue for s in ranking.ranking_stability(tables, ["A", "B"], classes=["WM"], resamples=5)] == ["WM"]


def tables_for(k: int, classes: tuple[str, ...], n: int = 6) -> list[pd.DataFrame]:
    rng = np.random.default_rng(k)
    return [pd.DataFrame([{"seed": "0", "case": f"s{i}", "class": t, "dice": 0.6 + 0.02 * c + rng.normal(0, 0.03)}
                          for i in range(n) for t in classes]) for c in range(k)]


def kept_figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    figures: list[Any] = []
    save = plots._save

    def keep(fig: Any, path: Path, dpi: int = 110) -> None:
        figures.append(fig)
        save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("classes", [("CSF",), ("CSF", "GM", "WM", "lesion")])
def test_write_ranking_stability_renders_one_panel_per_ranking(k: int, classes: tuple[str, ...], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    figures = kept_figures(monkeypatch)
    names = [f"row {i} (unet, torch)" for i in range(k)]
    paths, text = ranking.write_ranking_stability(tables_for(k, classes), names, tmp_path, resamples=40)
    assert [p.name for p in paths] == [ranking.CSV_NAME, ranking.BLOBS_NAME, ranking.SIGNIFICANCE_NAME]
    for png in paths[1:]:
        assert png.read_bytes()[:8] == PNG_MAGIC
    shown = [*classes, ranking.MEAN_CLASS] if len(classes) > 1 else list(classes)
    for figure in figures:
        titles = [ax.get_title().split(" ")[1].rstrip(":") for ax in figure.axes if ax.get_visible()]
        assert titles == shown
    frame = pd.read_csv(paths[0])
    assert frame["class"].unique().tolist() == shown and len(frame) == k * len(shown)
    assert [f"freq_rank_{r}" for r in range(1, k + 1)] == [c for c in frame.columns if c.startswith("freq_rank_")]
    assert frame.filter(like="freq_rank_").sum(axis=1).to_numpy() == pytest.approx(1.0)
    assert frame.groupby("class")["full_rank"].min().eq(1).all()
    assert text.count("\n- ") == len(shown) and "τ" in text and "rank 1:" in text


def test_fewer_than_two_configurations_or_three_shared_subjects_write_nothing(tmp_path: Path) -> None:
    paths, note = ranking.write_ranking_stability(tables_for(1, ("CSF",)), ["only"], tmp_path)
    assert paths == [] and "1 configuration" in note and note.count("\n") == 1
    two = tables_for(2, ("CSF",), n=2)
    paths, note = ranking.write_ranking_stability(two, ["a", "b"], tmp_path)
    assert paths == [] and f"fewer than {ranking.MIN_SUBJECTS} subjects" in note
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_name_the_value() -> None:
    tables = tables_for(2, ("CSF",))
    with pytest.raises(ConfigError, match="2 per-subject tables but 1 names"):
        ranking.ranking_stability(tables, ["a"])
    with pytest.raises(ConfigError, match="'hd95' is not a column"):
        ranking.ranking_stability(tables, ["a", "b"], "hd95")
    with pytest.raises(ConfigError, match=r"\['a'\] appear more than once"):
        ranking.ranking_stability(tables, ["a", "a"])
    with pytest.raises(ConfigError, match="resamples=0"):
        ranking.ranking_stability(tables, ["a", "b"], resamples=0)
