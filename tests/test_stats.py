"""bench.evaluation.stats against scipy, brute force and hand computations on small per-subject tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench.evaluation import stats


def table(values: dict[str, float], seed: str = "0", tissue: str = "CSF") -> pd.DataFrame:
    return pd.DataFrame([{"seed": seed, "case": c, "class": tissue, "dice": v} for c, v in values.items()])


def series(values: list[float]) -> pd.Series:
    return pd.Series(values, index=[f"s{i:02d}" for i in range(len(values))])


def test_subject_values_average_seeds_per_subject_and_drop_non_finite() -> None:
    frame = pd.concat([table({"a": 0.5, "b": 0.7}, seed="0"), table({"a": 0.7, "b": np.inf}, seed="1"),
                       table({"a": 0.1}, tissue="GM")])
    values = stats.subject_values(frame, "dice", "CSF")
    assert values.to_dict() == {"a": pytest.approx(0.6), "b": 0.7}


def test_bootstrap_ci_is_the_percentile_interval_of_resampled_means() -> None:
    data = np.array([0.61, 0.72, 0.80, 0.83, 0.90, 0.95])
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
    means = [rng.choice(data, data.size).mean() for _ in range(stats.BOOTSTRAP_RESAMPLES)]
    assert stats.bootstrap_ci(data) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-15)
    assert stats.bootstrap_ci(data) == stats.bootstrap_ci(data)  # a fixed seed: reproducible
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(np.isnan(stats.bootstrap_ci([])))


def test_paired_test_is_scipys_exact_wilcoxon_without_ties() -> None:
    x = series([0.81, 0.85, 0.79, 0.90, 0.88, 0.84, 0.86])
    y = series([0.803, 0.871, 0.752, 0.845, 0.866, 0.787, 0.829]).iloc[::-1]  # pairs by subject, not by position
    test = stats.paired_test(x, y)
    y = y.sort_index()
    expected = sps.wilcoxon(x.to_numpy(), y.to_numpy(), method="exact")
    assert (test.n_pairs, test.method, test.note) == (7, "exact", "")
    assert test.statistic == expected.statistic and test.p == pytest.approx(expected.pvalue, rel=1e-12)


def test_paired_test_with_zeros_and_ties_is_the_exact_sign_flip_distribution() -> None:
    diff = np.array([0.25, -0.25, 0.5, 0.75, 0.0, 1.5, 0.0, -0.125])  # binary fractions: exact ties
    test = stats.paired_test(series(list(diff + 1)), series([1.0] * 8))
    kept = diff[diff != 0]
    ranks = sps.rankdata(np.abs(kept))
    observed = ranks[kept > 0].sum()
    total = ranks.sum()
    statistic = min(observed, total - observed)
    flips = [(ranks * np.array(signs)).sum() for signs in itertools.product([0, 1], repeat=kept.size)]
    p = np.mean([min(t, total - t) <= statistic for t in flips])
    assert test.n_pairs == 8 and test.statistic == statistic and test.p == pytest.approx(p)
    assert test.method == "permutation, exhaustive"
    assert test.note == "2 zero differences dropped; tied differences"


def test_paired_test_with_ties_follows_scipys_auto_rule() -> None:
    small = np.array([0.25, -0.25, 0.5, 0.75, 1.5, -0.125, 0.375, 0.625])  # 8 pairs, one tie
    large = np.tile([0.25, -0.5, 0.75, 1.0, -1.25], 3)  # 15 pairs, many ties: the normal approximation
    for diff, method in ((small, "permutation, exhaustive"), (large, "asymptotic")):
        test = stats.paired_test(series(list(diff + 1)), series([1.0] * diff.size))
        expected = sps.wilcoxon(diff, method="auto")
        assert test.method == method and test.note == "tied differences"
        assert test.statistic == expected.statistic and test.p == pytest.approx(expected.pvalue, rel=1e-12)
    assert stats.paired_test(series(list(large + 1)), series([1.0] * 15)).p == pytest.approx(
        sps.wilcoxon(large, method="asymptotic").pvalue, rel=1e-12)


def test_paired_test_refuses_fewer_than_five_pairs_and_identical_values() -> None:
    few = stats.paired_test(series([0.1, 0.2, 0.3, 0.4]), series([0.5, 0.6, 0.7, 0.8, 0.9]))
    assert (few.n_pairs, few.p, few.note) == (4, None, stats.NOTE_FEW_PAIRS)
    same = stats.paired_test(series([0.8] * 6), series([0.8] * 6))
    assert (same.n_pairs, same.p, same.note) == (6, None, stats.NOTE_ALL_ZERO)


def test_holm_matches_a_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_compare_marks_the_reference_and_missing_reference() -> None:
    a = table({f"s{i}": 0.80 + 0.01 * i for i in range(6)})
    b = table({f"s{i}": 0.70 + 0.011 * i for i in range(6)})
    frame = stats.compare([a, b], reference=0, metrics=["dice"], tissues=["CSF"])
    ref, other = frame.iloc[0], frame.iloc[1]
    assert ref["note"] == stats.NOTE_IS_REFERENCE and stats.mark(ref["note"], ref["p_holm"]) == "ref"
    assert other["p_holm"] == other["p"] == pytest.approx(2 / 64)
    assert stats.mark(other["note"], other["p_holm"]) == "*"
    absent = stats.compare([a, b], reference=None, metrics=["dice"], tissues=["CSF"])
    assert (absent["note"] == stats.NOTE_NO_REFERENCE).all() and absent["p"].isna().all()


def test_mean_ranks_over_shared_subjects_with_a_bootstrap_interval() -> None:
    good = table({"a": 0.9, "b": 0.9, "c": 0.7, "z": 0.1})
    bad = table({"a": 0.8, "b": 0.9, "c": 0.8})
    ranks = stats.mean_ranks([good, bad], "dice", "CSF")
    assert ranks["n_subjects"].tolist() == [3, 3]  # z is not shared
    assert ranks["mean_rank"].tolist() == pytest.approx([(1 + 1.5 + 2) / 3, (2 + 1.5 + 1) / 3])
    assert (ranks["ci_low"] <= ranks["mean_rank"]).all() and (ranks["mean_rank"] <= ranks["ci_high"]).all()
    assert ranks["ci_low"].min() >= 1 and ranks["ci_high"].max() <= 2
    lower_better = stats.mean_ranks([good.rename(columns={"dice": "hd"}), bad.rename(columns={"dice": "hd"})],
                                    "hd", "CSF")
    assert lower_better["mean_rank"].tolist() == pytest.approx(ranks["mean_rank"].tolist()[::-1])


def test_compare_defaults_to_the_classes_the_tables_hold_in_their_order() -> None:
    values = {f"s{i}": 0.8 + 0.01 * i for i in range(5)}
    tables = [pd.concat([table(values, tissue=t) for t in ("lesion", "edema")]),
              pd.concat([table(values, tissue=t) for t in ("lesion", "edema", "necrosis")])]
    assert stats.table_classes(tables) == ["lesion", "edema", "necrosis"]
    frame = stats.compare(tables, reference=0, metrics=["dice"])
    assert frame["tissue"].tolist() == ["lesion", "lesion", "edema", "edema", "necrosis", "necrosis"]
    assert frame.query("tissue == 'necrosis'")["n_subjects"].tolist() == [0, 5]
