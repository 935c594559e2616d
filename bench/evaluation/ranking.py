"""How stable a ranking of configurations is, as the segmentation-challenge literature reports it.

Maier-Hein et al. 2018 ("Why rankings of biomedical image analysis competitions should be interpreted with
care") and Wiesenfarth et al. 2021 (challengeR): rank, resample the test subjects, re-rank, and show how often
each configuration takes each rank; test every pair of configurations.

* Ranking: aggregate, then rank. A configuration's score is its mean over the subjects every configuration was
  tested on (a subject's value is the mean over its seeds, :func:`bench.evaluation.stats.subject_values`); rank 1
  is the best (highest Dice; lowest AVD, HD, HD95, ASSD). Tied configurations share the average of the ranks
  they span (two tied for first are both 1.5).
* Bootstrap: ``resamples`` draws of the subjects with replacement from ``numpy.random.default_rng(seed)``
  (as :func:`bench.evaluation.stats.bootstrap_ci` draws them), re-ranked each time. The rank-frequency matrix
  gives each configuration's share of the resamples at each rank 1..K; a tie spreads its resample evenly over
  the ranks it spans, so every row and every column sums to 1. Median rank and the 95 % rank interval are
  numpy's (linear) percentiles of the resampled average ranks, as challengeR's R ``quantile`` (type 7).
* Kendall's τ-b (``scipy.stats.kendalltau``) between each resampled ranking and the full-data ranking: its
  mean, median and 2.5/97.5 percentiles. A resample whose configurations all tie has no τ; such resamples are
  left out of the summary (counted in ``tau_undefined``).
* Significance map: for each ordered pair (i, j) a one-sided Wilcoxon signed-rank test that i is better than j
  on the paired subjects (alternative ``greater`` for Dice, ``less`` for the distances), chosen as
  :func:`bench.evaluation.stats.paired_test` chooses: scipy's exact null distribution without zero or tied
  differences, otherwise zeros dropped and all sign flips up to 13 non-zero differences, the tie-corrected
  normal approximation above; a pair equal on every subject gets p = 1. Holm's correction runs over all
  K(K − 1) ordered pairs (challengeR's family); i beats j where the adjusted p < ``ALPHA``.
* "mean": the all-classes ranking, by each subject's mean over the classes (subjects with a finite value for
  every class in every configuration). It is left out when there is a single class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.errors import ConfigError
from bench.evaluation import stats
from bench.evaluation.stats import ALPHA, CONFIDENCE, LOWER_IS_BETTER, MAX_EXHAUSTIVE, holm, subject_values
from bench.io import write_text_atomic

RESAMPLES = 1_000
SEED = stats.BOOTSTRAP_SEED
MIN_SUBJECTS = 3
MEAN_CLASS = "mean"
CSV_NAME, BLOBS_NAME, SIGNIFICANCE_NAME = "ranking_stability.csv", "ranking_blobs.png", "ranking_significance.png"


@dataclass(frozen=True)
class RankingStability:
    """One metric's ranking of the configurations for one class (or :data:`MEAN_CLASS`) and its stability.

    Series and frames are indexed by configuration name (input order); ``frequency``'s columns are ranks 1..K;
    ``p``/``p_holm``/``significant`` are K × K, row i against column j ("i better than j"), NaN/False on the
    diagonal.
    """

    metric: str
    tissue: str
    higher_is_better: bool
    subjects: tuple[str, ...]
    left_out: tuple[str, ...]
    note: str
    mean: pd.Series
    full_rank: pd.Series
    frequency: pd.DataFrame
    median_rank: pd.Series
    rank_low: pd.Series
    rank_high: pd.Series
    tau: np.ndarray
    p: pd.DataFrame
    p_holm: pd.DataFrame
    seed: int
    alpha: float = ALPHA

    @property
    def names(self) -> list[str]:
        return [str(n) for n in self.full_rank.index]

    @property
    def order(self) -> list[str]:
        """Names by full rank, ties broken by median rank, then input order."""
        keys = pd.DataFrame({"full": self.full_rank, "median": self.median_rank,
                             "position": range(len(self.full_rank))})
        return [str(n) for n in keys.sort_values(["full", "median", "position"]).index]

    @property
    def significant(self) -> pd.DataFrame:
        return self.p_holm.lt(self.alpha)

    @property
    def resamples(self) -> int:
        return int(self.tau.size)

    def tau_summary(self) -> dict[str, float]:
        """Mean, median and 2.5/97.5 percentiles of the defined τ values, and how many were undefined."""
        finite = self.tau[np.isfinite(self.tau)]
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        return {"tau_mean": float(finite.mean()) if finite.size else float("nan"),
                "tau_median": float(np.median(finite)) if finite.size else float("nan"),
                "tau_low": float(low), "tau_high": float(high), "tau_undefined": int(self.tau.size - finite.size)}


def rank_configurations(values: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Rank the columns (configurations) of a subjects × configurations matrix by their mean over the rows.

    Rank 1 is the best; tied means share the average of the ranks they span.
    """
    means = values.mean(axis=0).to_numpy(dtype=float)
    ranks = sps.rankdata(-means if higher_is_better else means)
    return pd.Series(ranks, index=values.columns, name="rank")


def resample_indices(n_subjects: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``resamples`` × ``n_subjects`` row indices drawn with replacement from ``default_rng(seed)``."""
    if resamples < 1:
        raise ConfigError(f"resamples={resamples}: the bootstrap needs at least one resample",
                          fix=f"use the default {RESAMPLES}")
    return np.random.default_rng(seed).integers(0, n_subjects, size=(resamples, n_subjects))


def bootstrap_ranks(values: pd.DataFrame, draws: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Resamples × configurations average ranks: the matrix's rows picked by each row of ``draws``, re-ranked."""
    means = values.to_numpy(dtype=float)[draws].mean(axis=1)
    return sps.rankdata(-means if higher_is_better else means, axis=1)


def rank_frequency(boot: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Configuration × rank 1..K: the share of resamples at that rank (a tie spread evenly over its ranks)."""
    k = boot.shape[1]
    low = sps.rankdata(boot, method="min", axis=1)  # the first and last rank each tie spans
    high = sps.rankdata(boot, method="max", axis=1)
    counts = np.stack([(((low <= r) & (r <= high)) / (high - low + 1)).sum(axis=0) for r in range(1, k + 1)],
                      axis=1)
    return pd.DataFrame(counts / boot.shape[0], index=list(names), columns=range(1, k + 1))


def kendall_taus(boot: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Kendall's τ-b between each resampled ranking and ``full`` (NaN where a ranking is all ties)."""
    unique, inverse = np.unique(boot, axis=0, return_inverse=True)
    taus = np.array([sps.kendalltau(full, row).statistic if np.ptp(row) > 0 and np.ptp(full) > 0 else np.nan
                     for row in unique], dtype=float)
    return taus[inverse.reshape(-1)]


def one_sided_wilcoxon(diff: np.ndarray, alternative: str) -> tuple[float, str]:
    """p-value and method of a one-sided Wilcoxon signed-rank test of the paired differences ``diff``."""
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return 1.0, "all differences zero"
    if nonzero.size == diff.size and np.unique(np.abs(nonzero)).size == nonzero.size:
        return float(sps.wilcoxon(diff, alternative=alternative, method="exact").pvalue), "exact"
    if nonzero.size <= MAX_EXHAUSTIVE:
        permutation = sps.PermutationMethod(n_resamples=2**MAX_EXHAUSTIVE)
        result = sps.wilcoxon(diff, alternative=alternative, zero_method="wilcox", method=permutation)
        return float(result.pvalue), "permutation, exhaustive"
    result = sps.wilcoxon(diff, alternative=alternative, zero_method="wilcox", method="asymptotic")
    return float(result.pvalue), "asymptotic"


def pairwise_wilcoxon(values: pd.DataFrame, higher_is_better: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(p, Holm-adjusted p): K × K, row i against column j, one-sided "i better than j", over all ordered pairs."""
    names = list(values.columns)
    matrix = values.to_numpy(dtype=float)
    pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    alternative = "greater" if higher_is_better else "less"
    raw = [one_sided_wilcoxon(matrix[:, i] - matrix[:, j], alternative)[0] for i, j in pairs]
    p, adjusted = (pd.DataFrame(np.nan, index=names, columns=names) for _ in range(2))
    for (i, j), value, corrected in zip(pairs, raw, holm(raw), strict=True):
        p.iloc[i, j], adjusted.iloc[i, j] = value, corrected
    return p, adjusted


def stability(values: pd.DataFrame, metric: str, tissue: str, draws: np.ndarray, seed: int = SEED,
              left_out: Sequence[str] = (), note: str = "", higher_is_better: bool | None = None) -> RankingStability:
    """Everything :class:`RankingStability` holds, for a subjects × configurations matrix and given draws."""
    higher = metric not in LOWER_IS_BETTER if higher_is_better is None else higher_is_better
    names = [str(c) for c in values.columns]
    full = rank_configurations(values, higher)
    boot = bootstrap_ranks(values, draws, higher)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, median, high = np.percentile(boot, [tail, 50, 100 - tail], axis=0)
    p, p_holm = pairwise_wilcoxon(values, higher)
    return RankingStability(
        metric=metric, tissue=tissue, higher_is_better=higher, subjects=tuple(str(s) for s in values.index),
        left_out=tuple(left_out), note=note, mean=values.mean(axis=0).rename("mean"), full_rank=full,
        frequency=rank_frequency(boot, names), median_rank=pd.Series(median, index=names, name="median_rank"),
        rank_low=pd.Series(low, index=names, name="rank_low"), rank_high=pd.Series(high, index=names, name="rank_high"),
        tau=kendall_taus(boot, full.to_numpy()), p=p, p_holm=p_holm, seed=seed)


def shared_matrix(values: Sequence[pd.Series], names: Sequence[str]) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """Subjects × configurations over the subjects every configuration has; the subjects left out and a note
    naming them with the configurations that lack them."""
    everyone = sorted(set().union(*(set(v.index) for v in values)))
    shared = [s for s in everyone if all(s in v.index for v in values)]
    left_out = tuple(s for s in everyone if s not in shared)
    matrix = pd.DataFrame({name: v.reindex(shared).to_numpy(dtype=float) for name, v in zip(names, values,
                                                                                            strict=True)},
                          index=pd.Index(shared, name="case"))
    missing = [f"{s} (not in {', '.join(n for n, v in zip(names, values, strict=True) if s not in v.index)})"
               for s in left_out]
    note = (f"{len(left_out)} subject{'s' if len(left_out) > 1 else ''} without a finite value in every "
            f"configuration left out: {'; '.join(missing)}") if left_out else ""
    return matrix, left_out, note


def class_values(tables: Sequence[pd.DataFrame], metric: str, tissue: str, classes: Sequence[str]) -> list[pd.Series]:
    """Per configuration, one value per subject: of ``tissue``, or for :data:`MEAN_CLASS` the mean over
    ``classes`` of the subjects with a finite value in each."""
    if tissue != MEAN_CLASS:
        return [subject_values(table, metric, tissue) for table in tables]
    return [pd.concat([subject_values(table, metric, c) for c in classes], axis=1, join="inner").mean(axis=1)
            for table in tables]


def _check(tables: Sequence[pd.DataFrame], names: Sequence[str], metric: str, classes: Sequence[str]) -> None:
    if len(tables) != len(names):
        raise ConfigError(f"{len(tables)} per-subject tables but {len(names)} names",
                          fix="give one name per configuration")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if list(names).count(n) > 1})
        raise ConfigError(f"configuration names {twice} appear more than once", fix="name each configuration once")
    lacking = [n for n, t in zip(names, tables, strict=True) if metric not in t.columns]
    if lacking:
        raise ConfigError(f"metric {metric!r} is not a column of the per-subject tables of {lacking}",
                          fix="use one of dice, avd, hd, hd95, assd")
    if MEAN_CLASS in classes:
        raise ConfigError(f"a class is named {MEAN_CLASS!r}, the name of the all-classes ranking",
                          fix="rename that class in the dataset's label set")


def ranking_stability(tables: Sequence[pd.DataFrame], names: Sequence[str], metric: str = "dice",
                      classes: Sequence[str] | None = None, resamples: int = RESAMPLES,
                      seed: int = SEED) -> list[RankingStability]:
    """One :class:`RankingStability` per class (default: the tables' classes) and, with several classes, one for
    :data:`MEAN_CLASS`; a class with fewer than :data:`MIN_SUBJECTS` shared subjects is skipped.

    Every class draws its resamples from the same ``seed``.
    """
    classes = stats.table_classes(tables) if classes is None else [str(c) for c in classes]
    _check(tables, names, metric, classes)
    out = []
    for tissue in [*classes, MEAN_CLASS] if len(classes) > 1 else classes:
        matrix, left_out, note = shared_matrix(class_values(tables, metric, tissue, classes), [str(n) for n in names])
        if len(matrix) >= MIN_SUBJECTS:
            out.append(stability(matrix, metric, tissue, resample_indices(len(matrix), resamples, seed), seed,
                                 left_out, note))
    return out


def stability_frame(stabilities: Sequence[RankingStability]) -> pd.DataFrame:
    """One row per configuration × class: full rank, median rank, rank interval, share of each rank, τ, and the
    configurations it is significantly better / worse than."""
    rows = []
    k = max((len(s.names) for s in stabilities), default=0)
    for s in stabilities:
        tau = s.tau_summary()
        for name in s.order:
            row = {"configuration": name, "class": s.tissue, "metric": s.metric, "n_subjects": len(s.subjects),
                   "mean": float(s.mean[name]), "full_rank": float(s.full_rank[name]),
                   "median_rank": float(s.median_rank[name]), "rank_ci_low": float(s.rank_low[name]),
                   "rank_ci_high": float(s.rank_high[name])}
            row.update({f"freq_rank_{r}": float(s.frequency.loc[name, r]) for r in range(1, k + 1)
                        if r in s.frequency.columns})
            row.update(tau)
            row["better_than"] = "; ".join(o for o in s.order if bool(s.significant.loc[name, o]))
            row["worse_than"] = "; ".join(o for o in s.order if bool(s.significant.loc[o, name]))
            row.update(resamples=s.resamples, seed=s.seed, left_out="; ".join(s.left_out))
            rows.append(row)
    return pd.DataFrame(rows)


def _share(value: float) -> str:
    return f"{100 * value:.0f} %" if value >= 0.005 else "<1 %"


def stability_markdown(stabilities: Sequence[RankingStability], skipped: Sequence[str] = ()) -> str:
    """A short paragraph: the method, then per class Kendall's τ, who holds rank 1 how often, significant pairs."""
    first = stabilities[0]
    direction = "highest" if first.higher_is_better else "lowest"
    lines = [f"**Ranking stability ({first.metric.upper()}).** Configurations ranked by their mean over the subjects "
             f"every one was tested on (rank 1 = {direction}; ties share the average rank), re-ranked on "
             f"{first.resamples:,} bootstrap resamples of the subjects (seed {first.seed}); Kendall's τ-b of each "
             f"resampled ranking against the full one, mean [{100 * (1 - CONFIDENCE) / 2:g}th, "
             f"{100 - 100 * (1 - CONFIDENCE) / 2:g}th percentile]; pairs: one-sided Wilcoxon signed-rank tests, Holm "
             f"over all ordered pairs, α = {first.alpha}. Figures `{BLOBS_NAME}`, `{SIGNIFICANCE_NAME}`; numbers "
             f"`{CSV_NAME}`.", ""]
    for s in stabilities:
        tau = s.tau_summary()
        leaders = s.frequency[1].sort_values(ascending=False)
        top = ", ".join(f"{n} {_share(v)}" for n, v in leaders.items() if v > 0)
        k = len(s.names)
        lines.append(f"- {s.tissue} ({len(s.subjects)} subjects): τ {tau['tau_mean']:.2f} "
                     f"[{tau['tau_low']:.2f}, {tau['tau_high']:.2f}]; rank 1: {top}; "
                     f"{int(s.significant.to_numpy().sum())} of {k * (k - 1)} ordered pairs differ significantly."
                     + (f" {s.note}." if s.note else ""))
    if skipped:
        lines.append(f"- No ranking for {', '.join(skipped)}: fewer than {MIN_SUBJECTS} subjects shared by every "
                     "configuration.")
    return "\n".join(lines) + "\n"


def write_ranking_stability(tables: Sequence[pd.DataFrame], names: Sequence[str], out_dir: Path,
                            metric: str = "dice", classes: Sequence[str] | None = None,
                            resamples: int = RESAMPLES, seed: int = SEED) -> tuple[list[Path], str]:
    """Write :data:`CSV_NAME`, :data:`BLOBS_NAME` (every class) and :data:`SIGNIFICANCE_NAME` (every class);
    return their paths and a Markdown paragraph. With fewer than 2 configurations or no class with
    :data:`MIN_SUBJECTS` shared subjects, nothing is written: ``([], a one-line note)``."""
    from bench.evaluation import plots

    if len(tables) < 2:
        return [], f"No ranking stability: {len(tables)} configuration{'' if len(tables) == 1 else 's'}, it needs 2.\n"
    classes = stats.table_classes(tables) if classes is None else [str(c) for c in classes]
    found = ranking_stability(tables, names, metric, classes, resamples, seed)
    if not found:
        return [], (f"No ranking stability: fewer than {MIN_SUBJECTS} subjects have a finite {metric} in every "
                    "configuration.\n")
    skipped = [c for c in classes if c not in {s.tissue for s in found}]
    paths = [write_text_atomic(out_dir / CSV_NAME, stability_frame(found).to_csv(index=False))]
    plots.rank_blobs(found, out_dir / BLOBS_NAME)
    plots.significance_map(found, out_dir / SIGNIFICANCE_NAME)
    paths += [out_dir / BLOBS_NAME, out_dir / SIGNIFICANCE_NAME]
    return paths, stability_markdown(found, skipped)
