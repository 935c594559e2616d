"""Statistics behind the report: per-subject values, bootstrap intervals, paired tests, Holm, ranks.

Everything works on per-subject tables (columns ``case``, ``class``, the metrics, and ``seed``/``fold``
when a configuration has several runs) and is deterministic: the bootstrap draws from a fixed seed.

* A configuration's value for a subject is the mean over its seeds of the subject's finite values (a
  subject is tested in one fold, so folds simply contribute different subjects).
* The 95 % interval is a percentile bootstrap of the mean over subjects: ``BOOTSTRAP_RESAMPLES``
  resamples of the subjects with replacement, drawn with ``numpy.random.default_rng(BOOTSTRAP_SEED)``.
* A configuration is compared with the reference on the subjects both have by a two-sided Wilcoxon
  signed-rank test: scipy's exact null distribution when the differences have no zeros and no ties,
  otherwise zero differences are dropped (``zero_method="wilcox"``) and, as scipy's ``method="auto"``
  does, the p-value comes from all 2**n sign flips of the n non-zero differences when n <= 13 (exact
  given the ties) and from the tie-corrected normal approximation above that. Fewer than ``MIN_PAIRS``
  pairs or only zero differences give no p-value but a note.
* Holm's step-down correction runs over the compared configurations, per metric and tissue (class).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_200
MAX_EXHAUSTIVE = 13  # scipy's own limit for exhaustive sign flips (method='auto' with ties or zeros)
CONFIDENCE = 0.95
ALPHA = 0.05
MIN_PAIRS = 5
LOWER_IS_BETTER = frozenset({"avd", "hd", "hd95", "assd"})

NOTE_FEW_PAIRS = f"fewer than {MIN_PAIRS} paired subjects"
NOTE_ALL_ZERO = "all paired differences are zero"
NOTE_NO_REFERENCE = "reference row not in this experiment"
NOTE_IS_REFERENCE = "reference"

STATS_COLUMNS = ("n_subjects", "mean", "sd", "ci_low", "ci_high", "n_pairs", "statistic", "p", "p_holm",
                 "method", "note")


def subject_values(per_subject: pd.DataFrame, metric: str, tissue: str) -> pd.Series:
    """One value per subject (index ``case``, sorted): the mean over seeds of its finite values."""
    table = per_subject[per_subject["class"] == tissue]
    values = pd.to_numeric(table[metric], errors="coerce").replace([np.inf, -np.inf], np.nan)
    out = values.groupby(table["case"].astype(str)).mean().dropna().sort_index()
    out.name = metric
    return out


def bootstrap_ci(values: Sequence[float] | np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement ``resamples`` times."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedTest:
    """A Wilcoxon signed-rank test of one configuration against the reference (``p`` None: not tested)."""

    n_pairs: int
    statistic: float | None = None
    p: float | None = None
    method: str = ""
    note: str = ""


def paired_test(values: pd.Series, reference: pd.Series) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``values − reference`` on the subjects (index) both have."""
    shared = values.index.intersection(reference.index)
    diff = (values.loc[shared] - reference.loc[shared]).to_numpy(dtype=float)
    n = int(diff.size)
    if n < MIN_PAIRS:
        return PairedTest(n, note=NOTE_FEW_PAIRS)
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return PairedTest(n, note=NOTE_ALL_ZERO)
    zeros = n - nonzero.size
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    if not zeros and not ties:
        result = stats.wilcoxon(diff, method="exact")
        return PairedTest(n, float(result.statistic), float(result.pvalue), "exact")
    parts = [f"{zeros} zero differences dropped" if zeros else "", "tied differences" if ties else ""]
    note = "; ".join(p for p in parts if p)
    if nonzero.size <= MAX_EXHAUSTIVE:  # every sign pattern: the exact null distribution given the ties
        permutation = stats.PermutationMethod(n_resamples=2**MAX_EXHAUSTIVE)
        result = stats.wilcoxon(diff, zero_method="wilcox", method=permutation)
        return PairedTest(n, float(result.statistic), float(result.pvalue), "permutation, exhaustive", note)
    result = stats.wilcoxon(diff, zero_method="wilcox", method="asymptotic")
    return PairedTest(n, float(result.statistic), float(result.pvalue), "asymptotic", note)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (the family is the whole sequence)."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [float(a) for a in adjusted]


def table_classes(tables: Sequence[pd.DataFrame]) -> list[str]:
    """The classes the per-subject tables hold, in order of first appearance (rows are written in label order)."""
    return list(dict.fromkeys(str(c) for table in tables if "class" in table for c in table["class"]))


def compare(tables: Sequence[pd.DataFrame], reference: int | None, metrics: Sequence[str],
            tissues: Sequence[str] | None = None) -> pd.DataFrame:
    """Summary, interval and test against ``tables[reference]`` for every table × metric × tissue.

    ``tissues`` (class names) defaults to the classes present in the tables (:func:`table_classes`). Returns
    one row per (``config`` = index into ``tables``, ``metric``, ``tissue``) with :data:`STATS_COLUMNS`;
    ``p_holm`` is Holm-adjusted over the tested configurations of that metric and tissue.
    """
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for tissue in table_classes(tables) if tissues is None else tissues:
            values = [subject_values(table, metric, tissue) for table in tables]
            ref = None if reference is None else values[reference]
            family = []
            for index, series in enumerate(values):
                low, high = bootstrap_ci(series.to_numpy())
                row = {"config": index, "metric": metric, "tissue": tissue, "n_subjects": len(series),
                       "mean": float(series.mean()) if len(series) else float("nan"),
                       "sd": float(series.std(ddof=1)) if len(series) > 1 else float("nan"),
                       "ci_low": low, "ci_high": high, "n_pairs": None, "statistic": None, "p": None,
                       "p_holm": None, "method": "", "note": ""}
                if ref is None:
                    row["note"] = NOTE_NO_REFERENCE
                elif index == reference:
                    row.update(n_pairs=len(series), note=NOTE_IS_REFERENCE)
                else:
                    test = paired_test(series, ref)
                    row.update(n_pairs=test.n_pairs, statistic=test.statistic, p=test.p, method=test.method,
                               note=test.note)
                    if test.p is not None:
                        family.append(len(rows))
                rows.append(row)
            for position, adjusted in zip(family, holm([rows[i]["p"] for i in family]), strict=True):
                rows[position]["p_holm"] = adjusted
    return pd.DataFrame(rows, columns=["config", "metric", "tissue", *STATS_COLUMNS])


def mark(note: str, p_holm: float | None, alpha: float = ALPHA) -> str:
    """A cell's mark from a :func:`compare` row: ``ref``, ``*`` (Holm p < alpha), ``""``, or why untested."""
    if note == NOTE_IS_REFERENCE:
        return "ref"
    if p_holm is not None and not np.isnan(p_holm):
        return "*" if p_holm < alpha else ""
    return {NOTE_FEW_PAIRS: f"n<{MIN_PAIRS}", NOTE_ALL_ZERO: "=ref", NOTE_NO_REFERENCE: ""}.get(note, "")


def mean_ranks(tables: Sequence[pd.DataFrame], metric: str, tissue: str, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Each configuration's mean rank over the subjects all share (rank 1 = best), with a bootstrap interval.

    Ties share their mean rank. Returns columns ``config``, ``mean_rank``, ``ci_low``, ``ci_high``, ``n_subjects``.
    """
    values = [subject_values(table, metric, tissue) for table in tables]
    shared = sorted(set.intersection(*(set(v.index) for v in values))) if values else []
    columns = ["config", "mean_rank", "ci_low", "ci_high", "n_subjects"]
    if not shared:
        return pd.DataFrame([{"config": i, "mean_rank": float("nan"), "ci_low": float("nan"),
                              "ci_high": float("nan"), "n_subjects": 0} for i in range(len(values))], columns=columns)
    matrix = np.stack([v.loc[shared].to_numpy(dtype=float) for v in values])  # configs × subjects
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    ranks = stats.rankdata(sign * matrix, axis=0)  # per subject, over configurations
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(shared), size=(resamples, len(shared)))
    boot = ranks[:, draws].mean(axis=2)  # configs × resamples
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(boot, [tail, 100 - tail], axis=1)
    return pd.DataFrame({"config": range(len(values)), "mean_rank": ranks.mean(axis=1), "ci_low": low,
                         "ci_high": high, "n_subjects": len(shared)}, columns=columns)
