"""Configurations compared along one setting (``bench compare --axis SETTING``): the pairs that differ in that
setting alone, their paired per-subject differences, a test of difference and one of equivalence, and their
costs side by side.

* **Axis**: a setting as the runs record it in their MLflow params (``framework``, ``train.precision``,
  ``sampling.region``, ``model.params.base_filters``, ``seed``), or its Hydra path where that maps one to one
  (``profile.precision``, ``optimizer.lr``, ``model.base_filters``: :data:`ALIASES`, :data:`GROUP_ALIASES`). A
  group (``optimizer``, ``train.loss``) covers every setting under it. ``seed`` covers ``seed`` and
  ``train.seed`` (they move together) and keeps the seeds of a configuration apart; ``framework`` also covers
  the settings that name a framework's code (:data:`FRAMEWORK_CODE`).
* **Pairs**: two configurations whose recorded settings are equal except the axis form a pair (a configuration
  with k partners is in k pairs). A and B are in axis order (numeric when every value is a number, else by
  text: ``tf`` before ``torch``, ``bf16`` before ``fp32``) and every difference is d = B − A. A configuration
  without a partner is named, with its closest configuration and how that one differs; none is dropped.
* **Seeds are matched**: where A and B ran seeds in common, only those seeds are compared (a seed one side ran
  alone, say a same-framework control, is left out and named in column ``seeds``), so both sides average the
  same number of training runs; without a seed in common (``--axis seed``), each side's seeds are used.
* **Per pair × metric × class**: a subject's value is its mean over the compared seeds (folds pool: each
  subject is tested in one fold); d on the subjects both configurations were tested on; n; mean d with its
  95 % percentile bootstrap interval (``stats.bootstrap_ci``); the two-sided Wilcoxon signed-rank p of
  ``stats.paired_test`` (scipy's exact test without zero or tied differences; otherwise zeros dropped and all
  sign flips up to ``stats.MAX_EXHAUSTIVE`` pairs, the tie-corrected normal approximation above; column
  ``method``). **Holm** runs over the pairs of each metric and class (the report's family, pairs in the place
  of its rows).
* **Equivalence (TOST)**: two one-sided Wilcoxon signed-rank tests, of d + margin > 0 and of d − margin < 0,
  by the same method rule (column ``tost_method``); p_TOST is the larger of the two and is not adjusted (an
  intersection-union test needs no correction for its own two tests). Verdict: ``equivalent`` when
  p_TOST < 0.05; ``different`` when the Holm p < 0.05 and not equivalent; else ``inconclusive`` (so too with
  fewer than ``stats.MIN_PAIRS`` shared subjects, where nothing is tested).
* **Margins** are in the metric's units (:data:`DEFAULT_MARGINS`: Dice 0.01, AVD 1 percentage point, HD and
  HD95 1 mm, ASSD 0.1 mm); ``margin`` (``--margin``) replaces the first metric's.
* **Cost** per pair: the median over each configuration's runs of training patches/s (last epoch), fit minutes,
  inference seconds per volume and peak memory MB, for A and B, and B/A.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.errors import ConfigError
from bench.evaluation import stats
from bench.evaluation.runs import (
    POOLED_PARAMS,
    ConfigResult,
    identity_params,
    load,
    select_runs,
)

DEFAULT_MARGINS: dict[str, float] = {"dice": 0.01, "avd": 1.0, "hd": 1.0, "hd95": 1.0, "assd": 0.1}
"""Equivalence margins in each metric's units: Dice, AVD (percentage points), HD, HD95, ASSD (mm)."""
EQUIVALENT, DIFFERENT, INCONCLUSIVE = "equivalent", "different", "inconclusive"
SEED = ("seed", "train.seed")
FRAMEWORK_CODE = ("model.builder", "model.params._target_")
"""Settings that name a framework's code (a registered builder, a ``_target_`` callable): they change with it."""
ALIASES: dict[str, str] = {
    "framework.name": "framework", "train.seed": "seed",
    "profile.precision": "train.precision", "profile.epochs": "train.epochs",
    "profile.steps_per_epoch": "train.steps_per_epoch", "profile.monitor": "train.monitor",
    "profile.keep_weights": "train.keep_weights", "profile.num_threads": "train.num_threads",
    "profile.early_stopping_patience": "train.early_stopping.patience",
    "profile.patch_size": "sampling.patch_size", "profile.patch_step": "sampling.step",
    "profile.batch_size": "sampling.batch_size", "profile.patches_per_epoch": "sampling.patches_per_epoch",
    "profile.val_batches": "sampling.val_batches", "profile.overlap": "inference.overlap",
    "data.fold": "data.split.fold", "data.folds": "data.split.folds", "data.fold_seed": "data.split.fold_seed",
}
"""Hydra path -> recorded setting, where one maps to the other one to one (``bench.config.run_spec_from_config``)."""
GROUP_ALIASES: dict[str, str] = {"profile.scheduler": "train.scheduler", "optimizer": "train.optimizer",
                                 "loss": "train.loss", "augmentation": "sampling.augmentation"}
"""Hydra section -> recorded section: ``optimizer.lr`` is ``train.optimizer.lr``; ``model.<key>`` is
``model.params.<key>``."""
COSTS = (("patches_per_s", "patches_per_s", 1.0, "Training patches/s"),
         ("fit_minutes", "fit_seconds", 1 / 60, "Fit (min)"),
         ("seconds_per_volume", "seconds_per_volume", 1.0, "Inference (s/volume)"),
         ("peak_memory_mb", "peak_memory_mb", 1.0, "Peak memory (MB)"))
"""(column, run metric, scale, heading) of each cost."""
TABLE_COLUMNS = ("pair", "label", "a", "b", "a_value", "b_value", "metric", "class", "margin", "n", "mean_a",
                 "mean_b", "mean_diff", "ci_low", "ci_high", "statistic", "p", "p_holm", "method", "note",
                 "p_tost_lower", "p_tost_upper", "p_tost", "tost_method", "verdict", "seeds")


@dataclass(frozen=True)
class Axis:
    """The setting compared along: as given, as recorded (``setting``), and the recorded params it covers."""

    given: str
    setting: str
    keys: tuple[str, ...]
    group: bool = False  # a section (``train.optimizer``): every setting under it

    @property
    def file_stem(self) -> str:
        """``compare-<setting>``, safe as a file name."""
        return "compare-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in self.setting)


@dataclass
class Pair:
    """Two configurations equal in every setting but the axis; differences are ``b − a``."""

    a: ConfigResult
    b: ConfigResult
    a_value: str
    b_value: str
    rest: dict[str, str]  # the settings they share
    label: str = ""


@dataclass
class Comparison:
    """Every pair along an axis, its numbers (``table``: one row per pair × metric × class, :data:`TABLE_COLUMNS`;
    ``costs``: one row per pair) and the configurations without a partner (one line each)."""

    axis: Axis
    pairs: list[Pair]
    table: pd.DataFrame
    costs: pd.DataFrame
    unpaired: list[str]
    margins: dict[str, float]
    note: str = ""  # runs of other splits, failed runs
    values: list[str] = field(default_factory=list)  # the axis values, in order


# --------------------------------------------------------------------------------------------- the axis

def axis_candidates(axis: str) -> list[str]:
    """The recorded names ``axis`` may mean: itself, then its Hydra translation (if any)."""
    name = axis.strip()
    out = [name, ALIASES.get(name, name)]
    for hydra, recorded in GROUP_ALIASES.items():
        if name == hydra or name.startswith(f"{hydra}."):
            out.append(recorded + name[len(hydra):])
    if name.startswith("model.") and not name.startswith(("model.params", "model.architecture", "model.builder")):
        out.append("model.params." + name.removeprefix("model."))
    return list(dict.fromkeys(out))


def recorded_settings(groups: Mapping[Any, Sequence[pd.Series]]) -> list[str]:
    """Every setting the selected runs record (their params, seeds and folds included, ``env.*`` not)."""
    return sorted({key for runs in groups.values() for run in runs for key in identity_params(run, ())})


def resolve_axis(axis: str, recorded: Iterable[str]) -> Axis:
    """The recorded setting(s) ``axis`` names (see the module docstring).

    Raises:
        ConfigError: No run records it; names the closest recorded settings.
    """
    known = set(recorded)
    for name in axis_candidates(axis):
        if name in SEED and (seeds := tuple(k for k in SEED if k in known)):
            return Axis(axis, "seed", seeds)
        if name in known:
            return Axis(axis, name, (name, *FRAMEWORK_CODE) if name == "framework" else (name,))
        under = tuple(sorted(k for k in known if k.startswith(f"{name}.")))
        if under:
            return Axis(axis, name, under, group=True)
    choices = sorted(known | ({"seed"} if known & set(SEED) else set()))
    close = list(dict.fromkeys(c for name in axis_candidates(axis)
                               for c in difflib.get_close_matches(name, choices, n=5, cutoff=0.6)))
    sections = sorted({k.split(".")[0] for k in choices})
    raise ConfigError(f"--axis {axis!r}: no run of this experiment records that setting",
                      fix=f"closest recorded settings: {', '.join(close[:5])}" if close else
                      f"name a recorded setting, e.g. under {', '.join(sections) or 'none'} (bench compare --help)")


def pooled_params(axis: Axis) -> tuple[str, ...]:
    """The params that pool across a configuration's runs, less the axis (``--axis seed`` keeps seeds apart)."""
    return tuple(p for p in POOLED_PARAMS if p not in axis.keys)


def axis_value(params: Mapping[str, str], axis: Axis) -> str:
    """A configuration's value on the axis (``∅``: not recorded); a group's as ``key=value; ...``."""
    if not axis.group:
        return params.get(axis.setting, "∅")
    return "; ".join(f"{k.removeprefix(axis.setting + '.')}={params.get(k, '∅')}" for k in axis.keys)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _order(values: Iterable[str]) -> Callable[[str], tuple[float, str]]:
    """Sort key of axis values: numeric when every value is a number (``8`` before ``16``), else by text."""
    numeric = all(_number(v) is not None for v in values)
    return lambda v: ((_number(v) or 0.0) if numeric else 0.0, v)


# -------------------------------------------------------------------------------------------------- pairs

def config_name(result: ConfigResult) -> str:
    """``row 9 (unet3d, torch) · sampling.region=overlaps_brain``; a row outside Table 1 with its label."""
    what = [result.key["architecture"], result.key["framework"]]
    if not result.key["row"] and result.label:
        what.append(result.label)
    text = f"row {result.key['row'] or '-'} ({', '.join(what)})"
    return f"{text} · {result.variant}" if result.variant else text


def _rest(params: Mapping[str, str], axis: Axis) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in axis.keys}


def _differing(x: Mapping[str, str], y: Mapping[str, str]) -> list[str]:
    return [k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]


def find_pairs(results: Sequence[ConfigResult], axis: Axis) -> tuple[list[Pair], list[str]]:
    """Every pair along ``axis`` (grouped by their shared settings, in axis order) and one line per
    configuration without a partner."""
    values = [axis_value(r.params, axis) for r in results]
    rests = [_rest(r.params, axis) for r in results]
    key = _order(values)
    pairs: list[tuple[int, Pair]] = []
    partnered: set[int] = set()
    for i, j in combinations(range(len(results)), 2):
        if rests[i] == rests[j] and values[i] != values[j]:
            a, b = sorted((i, j), key=lambda k: key(values[k]))
            group = next(k for k in range(len(results)) if rests[k] == rests[i])
            pairs.append((group, Pair(results[a], results[b], values[a], values[b], rests[i])))
            partnered |= {i, j}
    pairs.sort(key=lambda item: (item[0], key(item[1].a_value), key(item[1].b_value)))
    ordered = [pair for _, pair in pairs]
    _label_pairs(ordered, axis)
    lonely = [_unpaired(i, results, values, rests, axis) for i in range(len(results)) if i not in partnered]
    return ordered, lonely


def _unpaired(index: int, results: Sequence[ConfigResult], values: Sequence[str],
              rests: Sequence[Mapping[str, str]], axis: Axis) -> str:
    """One line naming a configuration without a partner, and how its closest configuration differs."""
    head = f"{config_name(results[index])} has no configuration that differs only in {axis.setting}"
    others = [k for k in range(len(results)) if k != index]
    if not others:
        return f"{head}: it is the only configuration"
    k = min(others, key=lambda o: (len(_differing(rests[index], rests[o])), values[o] == values[index]))
    keys = _differing(rests[index], rests[k])
    shown = ", ".join(f"{key} ({rests[index].get(key, '∅')} vs {rests[k].get(key, '∅')})" for key in keys[:4])
    shown += f" and {len(keys) - 4} more settings" if len(keys) > 4 else ""
    closest = f"the closest, {config_name(results[k])}"
    if values[k] == values[index]:
        closest += f", has the same {axis.setting}"
        return f"{head}: {closest}" + (f" and differs in {shown}" if keys else " and the same settings")
    value = f"{axis.setting}={values[k]}"
    return f"{head}: {closest}" + ("" if value in closest else f" ({value})") + f", also differs in {shown}"


def _shown(pair: Pair, axis: Axis) -> tuple[str, str]:
    """The pair's axis values as shown: a group's only where they differ."""
    if not axis.group:
        return pair.a_value, pair.b_value
    keys = _differing(pair.a.params, pair.b.params)
    return tuple("; ".join(f"{k.removeprefix(axis.setting + '.')}={r.params.get(k, '∅')}" for k in keys)
                 for r in (pair.a, pair.b))  # type: ignore[return-value]


def _label_pairs(pairs: Sequence[Pair], axis: Axis) -> None:
    """``row 9 unet3d torch · <setting that tells pairs of one row apart>: A → B``."""
    def base(pair: Pair) -> str:
        result, rows = pair.a, [pair.a.key["row"] or "-", pair.b.key["row"] or "-"]
        parts = [f"row {rows[0]}" if rows[0] == rows[1] else f"rows {rows[0]}, {rows[1]}", result.key["architecture"]]
        if "framework" not in axis.keys:
            parts.append(result.key["framework"])
        if not result.key["row"] and result.label:
            parts.append(f"({result.label})")
        return " ".join(parts)

    bases = [base(p) for p in pairs]
    for pair, name in zip(pairs, bases, strict=True):
        same = [p for p, b in zip(pairs, bases, strict=True) if b == name]
        keys = sorted({k for p in same for k in p.rest})
        context = "".join(f" · {k}={pair.rest.get(k, '∅')}" for k in keys
                          if len({p.rest.get(k, "∅") for p in same}) > 1)
        a, b = _shown(pair, axis)
        pair.label = f"{name}{context}: {a} → {b}"


# ------------------------------------------------------------------------------------------------ tests

def signed_rank(x: np.ndarray, alternative: str) -> tuple[float, str]:
    """One-sided (``greater``/``less``) Wilcoxon signed-rank p of ``x`` and how it was computed, by the rule of
    ``stats.paired_test``; p = 1 when every value is zero."""
    nonzero = x[x != 0]
    if nonzero.size == 0:
        return 1.0, "all zero"
    if nonzero.size == x.size and np.unique(np.abs(nonzero)).size == nonzero.size:
        return float(sps.wilcoxon(x, alternative=alternative, method="exact").pvalue), "exact"
    if nonzero.size <= stats.MAX_EXHAUSTIVE:
        method = sps.PermutationMethod(n_resamples=2**stats.MAX_EXHAUSTIVE)
        result = sps.wilcoxon(x, zero_method="wilcox", alternative=alternative, method=method)
        return float(result.pvalue), "permutation, exhaustive"
    result = sps.wilcoxon(x, zero_method="wilcox", alternative=alternative, method="asymptotic")
    return float(result.pvalue), "asymptotic"


def tost(diff: np.ndarray, margin: float) -> tuple[float, float, str]:
    """Two one-sided signed-rank tests of equivalence within ±``margin``: (p of d + margin > 0, p of
    d − margin < 0, method); p_TOST is the larger p."""
    lower, how_low = signed_rank(diff + margin, "greater")
    upper, how_up = signed_rank(diff - margin, "less")
    return lower, upper, how_low if how_low == how_up else f"{how_low}; {how_up}"


def verdict(p_holm: float | None, p_tost: float | None, alpha: float = stats.ALPHA) -> str:
    """``equivalent`` (p_TOST < alpha), ``different`` (Holm p < alpha and not equivalent) or ``inconclusive``."""
    if p_tost is not None and p_tost < alpha:
        return EQUIVALENT
    return DIFFERENT if p_holm is not None and p_holm < alpha else INCONCLUSIVE


def _seed_list(seeds: set[str]) -> str:
    return ", ".join(sorted(seeds, key=_order(seeds)))


def matched_seeds(pair: Pair) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A's and B's per-subject tables limited to the seeds both ran (all of each side's when they share none),
    and which seeds were compared: ``0, 1``; ``0 (B also ran 1: left out)``; ``0 vs 1`` (none shared)."""
    a, b = pair.a.per_subject, pair.b.per_subject
    seeds_a, seeds_b = set(a["seed"].astype(str)), set(b["seed"].astype(str))
    shared = seeds_a & seeds_b
    if not shared:
        return a, b, f"{_seed_list(seeds_a)} vs {_seed_list(seeds_b)}"
    alone = [f"{side} also ran {_seed_list(extra)}" for side, extra in (("A", seeds_a - shared), ("B", seeds_b - shared))
             if extra]
    text = _seed_list(shared) + (f" ({'; '.join(alone)}: left out)" if alone else "")
    return a[a["seed"].astype(str).isin(shared)], b[b["seed"].astype(str).isin(shared)], text


def pair_row(pair: Pair, metric: str, tissue: str, margin: float) -> dict[str, Any]:
    """One pair's numbers for one metric and class (``p_holm`` and ``verdict`` are filled by :func:`pair_table`)."""
    table_a, table_b, seeds = matched_seeds(pair)
    a = stats.subject_values(table_a, metric, tissue)
    b = stats.subject_values(table_b, metric, tissue)
    shared = a.index.intersection(b.index)
    diff = (b.loc[shared] - a.loc[shared]).to_numpy(dtype=float)
    low, high = stats.bootstrap_ci(diff)
    nan = float("nan")
    row: dict[str, Any] = {
        "label": pair.label, "a": config_name(pair.a), "b": config_name(pair.b), "a_value": pair.a_value,
        "b_value": pair.b_value, "metric": metric, "class": tissue, "margin": margin, "n": int(diff.size),
        "mean_a": float(a.loc[shared].mean()) if diff.size else nan,
        "mean_b": float(b.loc[shared].mean()) if diff.size else nan,
        "mean_diff": float(diff.mean()) if diff.size else nan, "ci_low": low, "ci_high": high,
        "statistic": None, "p": None, "p_holm": None, "method": "", "note": "",
        "p_tost_lower": None, "p_tost_upper": None, "p_tost": None, "tost_method": "", "verdict": INCONCLUSIVE, "seeds": seeds}
    if diff.size < stats.MIN_PAIRS:
        row["note"] = stats.NOTE_FEW_PAIRS
        return row
    test = stats.paired_test(b, a)
    row.update(statistic=test.statistic, p=test.p, method=test.method, note=test.note)
    lower, upper, how = tost(diff, margin)
    row.update(p_tost_lower=lower, p_tost_upper=upper, p_tost=max(lower, upper), tost_method=how)
    return row


def pair_table(pairs: Sequence[Pair], margins: Mapping[str, float], classes: Sequence[str]) -> pd.DataFrame:
    """:func:`pair_row` for every pair × metric (``margins``' keys, in order) × class, Holm-adjusted over the
    pairs of each metric and class, with verdicts."""
    rows: list[dict[str, Any]] = []
    for metric, margin in margins.items():
        blocks = []
        for tissue in classes:  # one Holm family
            block = [{"pair": index, **pair_row(pair, metric, tissue, margin)}
                     for index, pair in enumerate(pairs, 1)]
            tested = [row for row in block if row["p"] is not None]
            for row, adjusted in zip(tested, stats.holm([row["p"] for row in tested]), strict=True):
                row["p_holm"] = adjusted
            for row in block:
                row["verdict"] = verdict(row["p_holm"], row["p_tost"])
            blocks.append(block)
        rows += [block[index] for index in range(len(pairs)) for block in blocks]  # pair by pair, classes in order
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _median(result: ConfigResult, metric: str, scale: float) -> float:
    if result.runs.empty or metric not in result.runs:
        return float("nan")
    values = pd.to_numeric(result.runs[metric], errors="coerce").dropna()
    return float(values.median() * scale) if len(values) else float("nan")


def cost_table(pairs: Sequence[Pair]) -> pd.DataFrame:
    """One row per pair: its runs, and per cost (:data:`COSTS`) the median over A's runs, over B's, and B/A."""
    rows = []
    for index, pair in enumerate(pairs, 1):
        row: dict[str, Any] = {"pair": index, "a_runs": len(pair.a.run_ids), "b_runs": len(pair.b.run_ids)}
        for column, metric, scale, _ in COSTS:
            a, b = _median(pair.a, metric, scale), _median(pair.b, metric, scale)
            row.update({f"a_{column}": a, f"b_{column}": b,
                        f"ratio_{column}": b / a if math.isfinite(a) and math.isfinite(b) and a > 0 else float("nan")})
        rows.append(row)
    return pd.DataFrame(rows)


def margins_for(metrics: Sequence[str], margin: float | None = None) -> dict[str, float]:
    """Each metric's equivalence margin (:data:`DEFAULT_MARGINS`), ``margin`` replacing the first metric's.

    Raises:
        ConfigError: An unknown metric, or a margin that is not a positive number.
    """
    chosen = list(dict.fromkeys(metrics)) or ["dice"]
    unknown = [m for m in chosen if m not in DEFAULT_MARGINS]
    if unknown:
        raise ConfigError(f"--metric {unknown[0]!r} is not a metric", fix=f"use one of {', '.join(DEFAULT_MARGINS)}")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ConfigError(f"--margin {margin}: the equivalence margin must be a positive number",
                          fix=f"in {chosen[0]}'s units, e.g. --margin {DEFAULT_MARGINS[chosen[0]]:g}")
    out = {m: DEFAULT_MARGINS[m] for m in chosen}
    if margin is not None:
        out[chosen[0]] = float(margin)
    return out


def compare_axis(results: Sequence[ConfigResult], axis: Axis, margins: Mapping[str, float],
                 note: str = "") -> Comparison:
    """Pairs along ``axis``, their statistics per metric (``margins``' keys) and class, and their costs.

    Raises:
        ConfigError: No two configurations differ in the axis alone.
    """
    pairs, unpaired = find_pairs(results, axis)
    every = [axis_value(r.params, axis) for r in results]
    values = sorted(set(every), key=_order(every))
    if not pairs:
        what = (f"every configuration has {axis.setting} {values[0]}" if len(values) == 1 else
                f"{axis.setting} values {', '.join(values)}")
        first = unpaired[0].split(": ", 1)[-1] if unpaired else ""
        raise ConfigError(f"--axis {axis.given}: no two of the {len(results)} configurations differ only in "
                          f"{axis.setting} ({what})",
                          fix="run the missing partner: the same configuration with another "
                          f"{axis.setting}" + (f"; {first}" if len(values) > 1 and first else ""))
    classes = stats.table_classes([r.per_subject for r in results])
    return Comparison(axis, pairs, pair_table(pairs, margins, classes), cost_table(pairs), unpaired, dict(margins),
                      note, values)


# ------------------------------------------------------------------------------------------------ entry

def along(tracker: Any, axis: str, split: str | None, cache_dir: Path, metrics: Sequence[str] = ("dice",),
          margin: float | None = None, groups: dict[tuple[str, ...], list[pd.Series]] | None = None
          ) -> Comparison:
    """The experiment's configurations (of one split) compared along ``axis``; ``groups``: runs already selected
    with the default pooling (``select_runs``), reselected when the axis pools differently (``seed``).

    Raises:
        ConfigError: An unknown axis, metric or margin (before anything is downloaded), or no pair.
    """
    chosen = margins_for(metrics, margin)
    note = ""
    if groups is None:
        groups, note = select_runs(tracker, split)
    resolved = resolve_axis(axis, recorded_settings(groups))
    pooled = pooled_params(resolved)
    if pooled != POOLED_PARAMS:
        groups, note = select_runs(tracker, split, pooled)
    results = load(groups, tracker, cache_dir, pooled)
    return compare_axis(results, resolved, chosen, note)
