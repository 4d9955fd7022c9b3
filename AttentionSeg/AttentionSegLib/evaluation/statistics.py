"""Is one model's advantage real? Paired statistics of per-case metrics between models.

For every pair of models and every label, over the cases both were evaluated on:

- the mean paired difference (first minus second) with a percentile bootstrap 95 % confidence
  interval over cases (seeded: the same inputs give the same interval);
- the two-sided Wilcoxon signed-rank p-value (scipy), then Holm's step-down correction over every
  pair and label of the report (the family of tests a reader looks at together);
- how many cases each model wins (higher Dice, lower HD95) and how many are ties.

Rankings follow the challenge convention "rank then aggregate": per case and label the models are
ranked (1 = best, ties share the mean rank), the ranks averaged over cases (per label, then over
labels); the ranking's stability is how often each model ranks first when the cases are resampled
with replacement (bootstrap).

Undefined values follow the metrics module's conventions: a NaN (a label absent from both maps)
leaves that case out of the comparison for that label (``n`` says how many cases each comparison
covers). An infinite HD95 (a label missed or invented) is the worst possible value: it wins and
loses by rank (Wilcoxon, wins, ranking), two infinite values tie, and a case where exactly one
value is infinite is left out of the mean difference and its interval (``n_infinite`` counts them),
since no finite mean holds it.

scipy gives the Wilcoxon test; the bootstrap and Holm's correction are a few lines of numpy
(scipy's ``bootstrap`` resamples one statistic at a time, and here the same resampled case
indices serve every pair, so the intervals of a report are consistent with one another).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
from scipy import stats

__all__ = [
    "HIGHER_IS_BETTER",
    "paired_difference",
    "wilcoxon_p",
    "holm",
    "win_counts",
    "mean_ranks",
    "rank_stability",
    "pairwise_statistics",
    "ranking",
    "per_case_values",
    "comparison_statistics",
]

# Which direction is better for each metric compared.
HIGHER_IS_BETTER = {"dice": True, "nsd": True, "hd95_mm": False, "assd_mm": False}
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 0


def _as_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b, with two infinities of the same sign a tie (0)."""
    with np.errstate(invalid="ignore"):
        difference = a - b
    difference[np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))] = 0.0
    return difference


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> dict:
    """Mean of ``a - b`` over the cases where both are defined and the difference is finite, with
    a percentile bootstrap interval over those cases.

    Returns ``{"mean", "ci_low", "ci_high", "n", "n_infinite"}`` (NaN where no case is left).
    """
    difference = _differences(_as_array(a), _as_array(b))
    defined = ~np.isnan(difference)
    finite = difference[defined & np.isfinite(difference)]
    result = {"n": int(defined.sum()), "n_infinite": int((defined & np.isinf(difference)).sum())}
    if finite.size == 0:
        return {**result, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    rng = np.random.default_rng(seed)
    resampled = finite[rng.integers(0, finite.size, size=(n_bootstrap, finite.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return {**result, "mean": float(finite.mean()), "ci_low": float(low), "ci_high": float(high)}


def wilcoxon_p(a: Sequence[float | None], b: Sequence[float | None]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired values (cases with a NaN left out);
    1.0 when every difference is zero, NaN with no case."""
    difference = _differences(_as_array(a), _as_array(b))
    difference = difference[~np.isnan(difference)]
    if difference.size == 0:
        return math.nan
    if not np.any(difference):
        return 1.0
    # An infinite difference is the largest in magnitude: rank it above every finite one.
    finite = np.abs(difference[np.isfinite(difference)])
    largest = (finite.max() if finite.size else 1.0) * 2 + 1
    difference = np.where(np.isinf(difference), np.sign(difference) * largest, difference)
    return float(stats.wilcoxon(difference, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(values))
    order = defined[np.argsort(values[defined], kind="stable")]
    m, running = len(order), 0.0
    for position, index in enumerate(order):
        running = max(running, (m - position) * values[index])
        adjusted[index] = min(1.0, running)
    return adjusted.tolist()


def win_counts(a: Sequence[float | None], b: Sequence[float | None], higher_is_better: bool) -> dict:
    """``{"first", "second", "ties"}``: cases each wins (NaN cases left out)."""
    difference = _differences(_as_array(a), _as_array(b))
    difference = difference[~np.isnan(difference)]
    if not higher_is_better:
        difference = -difference
    return {
        "first": int((difference > 0).sum()),
        "second": int((difference < 0).sum()),
        "ties": int((difference == 0).sum()),
    }


def _case_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Ranks (1 = best, ties averaged) of the models (rows) in every case (column); a case where
    any model's value is NaN gets NaN ranks (left out)."""
    scores = -values if higher_is_better else values.copy()
    ranks = np.full(values.shape, np.nan)
    complete = ~np.isnan(values).any(axis=0)
    if complete.any():
        # rankdata ranks +inf last (the worst for a lower-is-better metric, as the conventions say).
        ranks[:, complete] = stats.rankdata(scores[:, complete], axis=0, method="average")
    return ranks


def mean_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Mean rank per model (rows) over the cases (columns) where every model is defined."""
    ranks = _case_ranks(np.asarray(values, dtype=float), higher_is_better)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a model with no complete case: NaN
        return np.nanmean(ranks, axis=1)


def rank_stability(
    values: np.ndarray, higher_is_better: bool, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """How often each model (row) has the best mean rank when the cases are resampled (a tie for
    first counts for each tied model)."""
    ranks = _case_ranks(np.asarray(values, dtype=float), higher_is_better)
    ranks = ranks[:, ~np.isnan(ranks).any(axis=0)]
    if ranks.shape[1] == 0:
        return np.full(ranks.shape[0], np.nan)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, ranks.shape[1], size=(n_bootstrap, ranks.shape[1]))
    means = ranks[:, samples].mean(axis=2)  # (models, bootstrap)
    first = means == means.min(axis=0, keepdims=True)
    return first.mean(axis=1)


def pairwise_statistics(
    per_case: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float | None]]]],
    metrics: Sequence[str] = ("dice", "hd95_mm"),
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> list[dict]:
    """One row per pair of models, label and metric.

    Args:
        per_case: model -> label value -> case id -> metric name -> value (None/NaN undefined,
            inf for a missed or invented label's distances).

    Returns rows ``{"first", "second", "label", "metric", "mean_difference", "ci_low", "ci_high",
    "n", "n_infinite", "p", "p_holm", "wins_first", "wins_second", "ties"}``; ``p_holm`` is
    corrected over every row of the report.
    """
    models = list(per_case)
    rows = []
    for first, second in combinations(models, 2):
        labels = sorted(set(per_case[first]) & set(per_case[second]))
        for label in labels:
            cases = sorted(set(per_case[first][label]) & set(per_case[second][label]))
            for metric in metrics:
                a = [per_case[first][label][case].get(metric) for case in cases]
                b = [per_case[second][label][case].get(metric) for case in cases]
                difference = paired_difference(a, b, n_bootstrap, seed)
                wins = win_counts(a, b, HIGHER_IS_BETTER[metric])
                rows.append(
                    {
                        "first": first,
                        "second": second,
                        "label": label,
                        "metric": metric,
                        "mean_difference": difference["mean"],
                        "ci_low": difference["ci_low"],
                        "ci_high": difference["ci_high"],
                        "n": difference["n"],
                        "n_infinite": difference["n_infinite"],
                        "p": wilcoxon_p(a, b),
                        "wins_first": wins["first"],
                        "wins_second": wins["second"],
                        "ties": wins["ties"],
                    }
                )
    for row, corrected in zip(rows, holm([row["p"] for row in rows])):
        row["p_holm"] = corrected
    return rows


def ranking(
    per_case: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float | None]]]],
    metric: str = "dice",
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> dict:
    """Rank then aggregate: per label the models' mean rank over the cases all of them cover, and
    overall the mean over labels of those mean ranks; with how often each model ranks first when
    the cases are resampled (per label, and overall with the same resampled cases for every
    label).

    Returns ``{"metric", "models", "labels": {label: {"mean_rank": {model: r}, "first": {model: f},
    "n": cases}}, "overall": {"mean_rank": {...}, "first": {...}}}``.
    """
    models = list(per_case)
    labels = sorted(set.intersection(*(set(per_case[m]) for m in models))) if models else []
    higher = HIGHER_IS_BETTER[metric]
    result = {"metric": metric, "models": models, "labels": {}, "overall": {}}
    label_ranks = []
    for label in labels:
        cases = sorted(set.intersection(*(set(per_case[m][label]) for m in models)))
        values = np.array([[_value(per_case[m][label][c].get(metric)) for c in cases] for m in models], dtype=float)
        values = values.reshape(len(models), len(cases))
        means = mean_ranks(values, higher)
        first = rank_stability(values, higher, n_bootstrap, seed)
        covered = int((~np.isnan(values).any(axis=0)).sum()) if cases else 0
        result["labels"][label] = {
            "mean_rank": dict(zip(models, means.tolist())),
            "first": dict(zip(models, first.tolist())),
            "n": covered,
        }
        label_ranks.append(means)
    if label_ranks:
        overall = np.nanmean(np.vstack(label_ranks), axis=0)
        first_overall = _overall_first(per_case, models, labels, metric, n_bootstrap, seed)
        result["overall"] = {
            "mean_rank": dict(zip(models, overall.tolist())),
            "first": dict(zip(models, first_overall.tolist())),
        }
    return result


def _value(value) -> float:
    return math.nan if value is None else float(value)


def _overall_first(per_case, models, labels, metric, n_bootstrap, seed) -> np.ndarray:
    """Bootstrap of the overall ranking: cases resampled once per replicate and used for every
    label (a case's labels move together)."""
    higher = HIGHER_IS_BETTER[metric]
    cases = sorted(set.intersection(*(set(per_case[m][label]) for m in models for label in labels)))
    if not cases:
        return np.full(len(models), np.nan)
    ranks = []
    for label in labels:
        values = np.array([[_value(per_case[m][label][c].get(metric)) for c in cases] for m in models], dtype=float)
        ranks.append(_case_ranks(values, higher))
    ranks = np.stack(ranks)  # (labels, models, cases)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(cases), size=(n_bootstrap, len(cases)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_label = np.nanmean(ranks[:, :, samples], axis=3)  # (labels, models, bootstrap)
        overall = np.nanmean(per_label, axis=0)  # (models, bootstrap)
    first = overall == np.nanmin(overall, axis=0, keepdims=True)
    return first.mean(axis=1)


def per_case_values(comparison: Mapping, metrics: Sequence[str] = ("dice", "hd95_mm", "assd_mm", "nsd")) -> dict:
    """model -> label value -> case id -> metric -> value, from a
    :func:`~AttentionSegLib.evaluation.batch.compare_models` result."""
    table: dict = {}
    for model, result in comparison["models"].items():
        for case in result["cases"]:
            for row in case["labels"]:
                values = {metric: row.get(metric) for metric in metrics}
                table.setdefault(model, {}).setdefault(int(row["value"]), {})[case["case"]] = values
    return table


def comparison_statistics(comparison: Mapping, n_bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> dict:
    """The statistics of a model comparison: ``{"pairwise": rows of :func:`pairwise_statistics`
    (Dice and HD95), "ranking": {"dice": ..., "hd95_mm": ...} of :func:`ranking`, "n_bootstrap",
    "seed"}``; empty pairwise rows with fewer than two models."""
    values = per_case_values(comparison)
    return {
        "pairwise": pairwise_statistics(values, ("dice", "hd95_mm"), n_bootstrap, seed) if len(values) > 1 else [],
        "ranking": {metric: ranking(values, metric, n_bootstrap, seed) for metric in ("dice", "hd95_mm")},
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
