"""Paired statistics of per-case metrics: numbers against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from AttentionSegLib.evaluation.statistics import (
    holm,
    mean_ranks,
    paired_difference,
    pairwise_statistics,
    rank_stability,
    ranking,
    wilcoxon_p,
    win_counts,
)

# A fixed table: Dice of three models on eight cases.
A = [0.91, 0.88, 0.93, 0.85, 0.90, 0.87, 0.92, 0.89]
B = [0.89, 0.86, 0.92, 0.86, 0.88, 0.84, 0.90, 0.88]
C = [0.70, 0.75, 0.72, 0.80, 0.71, 0.69, 0.74, 0.73]


def test_the_bootstrap_interval_matches_scipys_percentile_bootstrap_and_is_reproducible():
    result = paired_difference(A, B, n_bootstrap=4000, seed=3)
    difference = np.subtract(A, B)
    assert result["mean"] == pytest.approx(difference.mean()) and result["n"] == 8
    reference = stats.bootstrap(
        (difference,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(9)
    ).confidence_interval
    # Two bootstrap runs of 4000 resamples: the same interval within a few thousandths.
    assert result["ci_low"] == pytest.approx(reference.low, abs=0.003)
    assert result["ci_high"] == pytest.approx(reference.high, abs=0.003)
    assert result == paired_difference(A, B, n_bootstrap=4000, seed=3)  # seeded: the same numbers
    assert result["ci_low"] < result["mean"] < result["ci_high"]


def test_wilcoxon_equals_scipy_and_undefined_cases_are_left_out():
    assert wilcoxon_p(A, C) == pytest.approx(stats.wilcoxon(np.subtract(A, C)).pvalue)
    with_nan = wilcoxon_p([*A, None], [*C, 0.5])
    assert with_nan == pytest.approx(stats.wilcoxon(np.subtract(A, C)).pvalue)
    assert wilcoxon_p(A, A) == 1.0 and math.isnan(wilcoxon_p([None], [0.3]))


def test_holm_against_a_hand_computation():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, monotone), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.4]) == pytest.approx([0.8, 0.8])
    assert holm([0.9, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    corrected = holm([0.01, float("nan"), 0.04])
    assert math.isnan(corrected[1]) and corrected[0] == pytest.approx(0.02) and corrected[2] == pytest.approx(0.04)


def test_infinite_distances_rank_last_and_leave_the_mean():
    hd_a = [2.0, 3.0, math.inf, 4.0]
    hd_b = [3.0, 3.5, 5.0, math.inf]
    # Lower is better: a wins cases 1, 2 and 4 (b's infinity), b wins case 3 (a's infinity).
    assert win_counts(hd_a, hd_b, higher_is_better=False) == {"first": 3, "second": 1, "ties": 0}
    difference = paired_difference(hd_a, hd_b)
    assert difference["n"] == 4 and difference["n_infinite"] == 2
    assert difference["mean"] == pytest.approx(np.mean([2.0 - 3.0, 3.0 - 3.5]))
    both = win_counts([math.inf], [math.inf], higher_is_better=False)
    assert both == {"first": 0, "second": 0, "ties": 1}


def test_rank_then_aggregate_and_its_stability():
    values = np.array([A, B, C])
    ranks = mean_ranks(values, higher_is_better=True)
    # Per case: A beats B except case 4 (0.85 < 0.86); C is last everywhere.
    assert ranks.tolist() == pytest.approx([(7 * 1 + 2) / 8, (7 * 2 + 1) / 8, 3.0])
    first = rank_stability(values, higher_is_better=True, n_bootstrap=500, seed=1)
    assert first[0] > 0.95 and first[2] == 0.0
    per_case = {
        name: {1: {f"c{i}": {"dice": v} for i, v in enumerate(column)}}
        for name, column in (("a", A), ("b", B), ("c", C))
    }
    report = ranking(per_case, "dice", n_bootstrap=200)
    assert report["labels"][1]["n"] == 8
    overall = report["overall"]["mean_rank"]
    assert overall["a"] < overall["b"] < overall["c"]


def test_pairwise_rows_cover_every_pair_label_and_metric_with_holm_over_the_report():
    per_case = {
        name: {
            label: {f"c{i}": {"dice": v - 0.01 * label, "hd95_mm": 10 * (1 - v)} for i, v in enumerate(column)}
            for label in (1, 2)
        }
        for name, column in (("a", A), ("b", B), ("c", C))
    }
    rows = pairwise_statistics(per_case, n_bootstrap=300)
    assert len(rows) == 3 * 2 * 2  # pairs x labels x metrics
    assert [row["p_holm"] for row in rows] == pytest.approx(holm([row["p"] for row in rows]))
    a_vs_c = next(r for r in rows if (r["first"], r["second"], r["label"], r["metric"]) == ("a", "c", 1, "dice"))
    assert a_vs_c["wins_first"] == 8 and a_vs_c["ci_low"] > 0
    hd = next(r for r in rows if (r["first"], r["second"], r["label"], r["metric"]) == ("a", "c", 1, "hd95_mm"))
    assert hd["wins_first"] == 8 and hd["mean_difference"] < 0  # lower HD95 is better
