"""Statistics for method comparison: known values computed by hand from the textbook formulas."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.errors import DabenchError
from bench.report.stats import (
    CONFIDENCE,
    average_ranks,
    cd_diagram,
    critical_difference,
    friedman,
    holm,
    mean_ci,
    min_wilcoxon_p,
    nemenyi,
    paired_comparison,
)

NAN = float("nan")


# --- mean_ci -----------------------------------------------------------------------------------


def test_mean_ci_matches_the_t_formula_by_hand():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.182446 (printed t tables).
    interval = mean_ci([1, 2, 3, 4])
    half = 3.182446 * math.sqrt(5 / 3) / 2
    assert CONFIDENCE == 0.95
    assert interval.n == 4
    assert interval.mean == pytest.approx(2.5)
    assert interval.half_width == pytest.approx(half, abs=1e-5)
    assert interval.low == pytest.approx(2.5 - half, abs=1e-5)
    assert interval.high == pytest.approx(2.5 + half, abs=1e-5)


def test_mean_ci_confidence_level_changes_the_width():
    # t_{0.95, 3} = 2.353363 for a 90 % interval.
    interval = mean_ci([1, 2, 3, 4], confidence=0.90)
    assert interval.half_width == pytest.approx(2.353363 * math.sqrt(5 / 3) / 2, abs=1e-5)


def test_mean_ci_drops_nan_and_inf():
    assert mean_ci([1, NAN, 2, math.inf, 3, 4, -math.inf]) == mean_ci([1, 2, 3, 4])


def test_mean_ci_one_value_has_a_mean_but_no_interval():
    interval = mean_ci([7.0, NAN])
    assert interval.n == 1
    assert interval.mean == 7.0
    assert math.isnan(interval.low) and math.isnan(interval.high)
    assert math.isnan(interval.half_width)


def test_mean_ci_no_value_is_all_nan():
    interval = mean_ci([NAN])
    assert interval.n == 0
    assert all(math.isnan(v) for v in (interval.mean, interval.low, interval.high))
    assert math.isnan(interval.half_width)
    assert mean_ci([]).n == 0


def test_mean_ci_identical_values_have_zero_width():
    interval = mean_ci([2.0, 2.0, 2.0])
    assert (interval.low, interval.high, interval.half_width) == (2.0, 2.0, 0.0)


def test_mean_ci_rejects_a_bad_confidence():
    with pytest.raises(DabenchError, match="confidence"):
        mean_ci([1, 2, 3], confidence=95)


# --- paired_comparison -------------------------------------------------------------------------


def test_paired_t_matches_the_formula_and_ttest_rel():
    a = [2.0, 4.0, 6.0, 9.0]
    b = [1.0, 1.0, 2.0, 3.0]
    # d = [1, 3, 4, 6]: mean 3.5, sd = sqrt(13/3), t = mean / (sd / sqrt(4)).
    sd = math.sqrt(13 / 3)
    result = paired_comparison(a, b)
    assert result.possible and result.reason == ""
    assert result.n == 4
    assert result.mean_diff == pytest.approx(3.5)
    assert result.t_statistic == pytest.approx(3.5 / (sd / 2))
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
    half = 3.182446 * sd / 2
    assert result.ci_low == pytest.approx(3.5 - half, abs=1e-5)
    assert result.ci_high == pytest.approx(3.5 + half, abs=1e-5)
    # Four positive differences: the exact two-sided p is 2 / 2**4.
    assert result.w_pvalue == pytest.approx(0.125)
    assert result.w_statistic == 0.0


def test_wilcoxon_on_five_positive_differences_is_exactly_0_0625():
    result = paired_comparison([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert result.w_pvalue == 0.0625
    assert result.min_wilcoxon_p == 0.0625


def test_swapping_a_and_b_flips_the_difference_and_keeps_the_p_values():
    a = [70.1, 72.4, 69.8, 71.0, 73.3]
    b = [68.0, 71.9, 70.2, 69.5, 70.0]
    ab, ba = paired_comparison(a, b), paired_comparison(b, a)
    assert ba.mean_diff == pytest.approx(-ab.mean_diff)
    assert (ba.ci_low, ba.ci_high) == pytest.approx((-ab.ci_high, -ab.ci_low))
    assert ba.t_statistic == pytest.approx(-ab.t_statistic)
    assert ba.t_pvalue == pytest.approx(ab.t_pvalue)
    assert ba.w_pvalue == pytest.approx(ab.w_pvalue)
    assert ab.mean_diff == pytest.approx(np.mean(np.subtract(a, b)))


def test_pairs_with_a_missing_value_are_dropped():
    full = paired_comparison([2, 4, 6, 9], [1, 1, 2, 3])
    gappy = paired_comparison([2, 4, NAN, 6, 9, 5], [1, 1, 3, 2, 3, math.inf])
    assert gappy.n == 4
    assert gappy.t_statistic == pytest.approx(full.t_statistic)
    assert gappy.w_pvalue == pytest.approx(full.w_pvalue)


def test_one_pair_is_not_testable():
    result = paired_comparison([3.0, NAN], [1.0, 2.0])
    assert not result.possible
    assert result.n == 1
    assert "no test is possible" in result.reason
    assert result.mean_diff == 2.0
    assert math.isnan(result.t_pvalue) and math.isnan(result.w_pvalue)
    assert math.isnan(result.ci_low)


def test_no_pair_is_not_testable():
    result = paired_comparison([NAN], [1.0])
    assert not result.possible and result.n == 0
    assert math.isnan(result.mean_diff)


def test_all_zero_differences_are_not_testable_even_with_float_noise():
    # 0.3 - 0.1 != 0.2 in binary floating point; rounding the differences removes the noise.
    a = [0.3 - 0.1, 0.7 - 0.4, 1.0]
    b = [0.2, 0.3, 1.0]
    assert a[0] != b[0]
    result = paired_comparison(a, b)
    assert not result.possible
    assert "zero" in result.reason
    assert result.mean_diff == 0.0
    assert math.isnan(result.t_statistic) and math.isnan(result.w_pvalue)


def test_constant_nonzero_differences_give_wilcoxon_but_no_t_test():
    result = paired_comparison([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert result.possible
    assert "t-test is undefined" in result.reason
    assert math.isnan(result.t_pvalue) and math.isnan(result.ci_low)
    assert result.w_pvalue == pytest.approx(0.25)
    assert result.mean_diff == pytest.approx(1.0)


def test_zero_differences_do_not_count_towards_the_wilcoxon_floor():
    result = paired_comparison([0, 1, 2, 3, 4], [0, 0, 0, 0, 0])
    assert result.n == 5
    assert result.min_wilcoxon_p == 0.125
    assert result.w_pvalue >= result.min_wilcoxon_p


def test_misaligned_inputs_are_rejected():
    with pytest.raises(DabenchError, match="aligned"):
        paired_comparison([1, 2, 3], [1, 2])


@pytest.mark.parametrize(("n", "p"), [(1, 1.0), (4, 0.125), (5, 0.0625), (6, 0.03125)])
def test_min_wilcoxon_p(n, p):
    assert min_wilcoxon_p(n) == p


def test_min_wilcoxon_p_without_pairs_is_nan():
    assert math.isnan(min_wilcoxon_p(0))


# --- average_ranks -----------------------------------------------------------------------------


def test_average_ranks_share_ties_and_sort_best_first():
    scores = pd.DataFrame({"a": [1.0, 5.0], "b": [1.0, 3.0], "c": [2.0, 4.0]}, index=["p1", "p2"])
    # p1 (lower better): a, b tie at 1.5, c = 3. p2: b = 1, c = 2, a = 3.
    ranks = average_ranks(scores, lower_is_better=True)
    assert list(ranks.index) == ["b", "a", "c"]
    assert ranks.to_dict() == pytest.approx({"a": 2.25, "b": 1.25, "c": 2.5})


def test_average_ranks_direction():
    scores = pd.DataFrame({"a": [1.0, 5.0], "b": [1.0, 3.0], "c": [2.0, 4.0]})
    higher = average_ranks(scores, lower_is_better=False)
    # Reversed: rank r becomes k + 1 - r.
    assert higher.to_dict() == pytest.approx({"a": 1.75, "b": 2.75, "c": 1.5})
    assert list(higher.index) == ["c", "a", "b"]


def test_average_ranks_drop_blocks_with_a_missing_method():
    scores = pd.DataFrame({"a": [1.0, NAN, 3.0], "b": [2.0, 0.0, 1.0]})
    ranks = average_ranks(scores, lower_is_better=True)
    # Only blocks 0 and 2 count; block 1 would otherwise give b a free rank 1.
    assert ranks.to_dict() == pytest.approx({"a": 1.5, "b": 1.5})


def test_average_ranks_without_a_complete_block_raise():
    scores = pd.DataFrame({"a": [1.0, NAN], "b": [NAN, 2.0]})
    with pytest.raises(DabenchError, match="no complete block"):
        average_ranks(scores, lower_is_better=True)


def test_average_ranks_reject_duplicate_methods():
    scores = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
    with pytest.raises(DabenchError, match="duplicate"):
        average_ranks(scores, lower_is_better=True)


# --- friedman ----------------------------------------------------------------------------------

# Rows are blocks, values chosen so each row's ranks (lower better) are obvious and tie-free:
# A = [1, 1, 1, 2], B = [2, 3, 2, 1], C = [3, 2, 3, 3]; average ranks 1.25, 2.0, 2.75.
FRIEDMAN_TABLE = pd.DataFrame(
    {"A": [10.0, 11.0, 10.5, 20.0], "B": [20.0, 40.0, 22.0, 5.0], "C": [30.0, 25.0, 40.0, 30.0]},
    index=["p1", "p2", "p3", "p4"],
)


def test_friedman_matches_the_rank_formula_and_iman_davenport():
    n, k = 4, 3
    mean_ranks = np.array([1.25, 2.0, 2.75])
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(mean_ranks**2) - k * (k + 1) ** 2 / 4)
    assert chi2 == pytest.approx(4.5)
    result = friedman(FRIEDMAN_TABLE, lower_is_better=True)
    assert result.possible and result.reason == ""
    assert (result.k, result.n) == (3, 4)
    assert result.statistic == pytest.approx(4.5)
    # χ² with 2 dof has survival function exp(-x / 2).
    assert result.pvalue == pytest.approx(math.exp(-4.5 / 2))
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert result.iman_davenport == pytest.approx(27 / 7)
    assert result.iman_davenport == pytest.approx(f)
    assert result.iman_davenport_pvalue == pytest.approx(stats.f.sf(f, 2, 6))
    assert result.ranks.to_dict() == pytest.approx({"A": 1.25, "B": 2.0, "C": 2.75})


def test_friedman_statistic_does_not_depend_on_direction_but_ranks_do():
    lower = friedman(FRIEDMAN_TABLE, lower_is_better=True)
    higher = friedman(FRIEDMAN_TABLE, lower_is_better=False)
    assert higher.statistic == pytest.approx(lower.statistic)
    assert higher.ranks.to_dict() == pytest.approx({"A": 2.75, "B": 2.0, "C": 1.25})
    assert list(higher.ranks.index) == ["C", "B", "A"]


def test_friedman_with_identical_rankings_has_infinite_f():
    scores = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0], "c": [3.0, 4.0, 5.0]})
    result = friedman(scores, lower_is_better=True)
    # χ² reaches its maximum n(k-1) = 6.
    assert result.statistic == pytest.approx(6.0)
    assert result.iman_davenport == math.inf
    assert result.iman_davenport_pvalue == 0.0


def test_friedman_needs_three_methods():
    result = friedman(FRIEDMAN_TABLE[["A", "B"]], lower_is_better=True)
    assert not result.possible
    assert "3 methods" in result.reason
    assert math.isnan(result.statistic) and math.isnan(result.iman_davenport_pvalue)
    assert result.ranks.to_dict() == pytest.approx({"A": 1.25, "B": 1.75})


def test_friedman_needs_two_complete_blocks():
    scores = FRIEDMAN_TABLE.copy()
    scores.loc[["p2", "p3", "p4"], "C"] = NAN
    result = friedman(scores, lower_is_better=True)
    assert not result.possible
    assert result.n == 1
    assert "2 complete blocks" in result.reason


def test_friedman_all_ties_is_not_possible():
    scores = pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": [1.0, 2.0]})
    result = friedman(scores, lower_is_better=True)
    assert not result.possible
    assert "tie" in result.reason


# --- nemenyi and the critical difference --------------------------------------------------------


def _random_scores(blocks: int, methods: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(blocks, methods)) + 0.7 * np.arange(methods)
    return pd.DataFrame(values, columns=[f"m{j}" for j in range(methods)])


def test_nemenyi_is_symmetric_with_ones_on_the_diagonal():
    scores = _random_scores(10, 4)
    pvalues = nemenyi(scores, lower_is_better=True)
    assert list(pvalues.index) == list(scores.columns)
    assert list(pvalues.columns) == list(scores.columns)
    np.testing.assert_allclose(pvalues.to_numpy(), pvalues.to_numpy().T)
    np.testing.assert_array_equal(np.diag(pvalues.to_numpy()), 1.0)
    assert ((pvalues.to_numpy() >= 0) & (pvalues.to_numpy() <= 1)).all()


def test_nemenyi_does_not_depend_on_direction():
    scores = _random_scores(10, 4, seed=1)
    pd.testing.assert_frame_equal(
        nemenyi(scores, lower_is_better=True), nemenyi(scores, lower_is_better=False)
    )


def test_nemenyi_separates_always_best_from_always_worst():
    blocks = 20
    scores = pd.DataFrame(
        {
            "best": np.full(blocks, 1.0),
            "middle": np.full(blocks, 2.0),
            "worst": np.full(blocks, 3.0),
        }
    )
    pvalues = nemenyi(scores, lower_is_better=True)
    assert pvalues.loc["best", "worst"] < 1e-4
    assert pvalues.loc["best", "middle"] > pvalues.loc["best", "worst"]


def test_nemenyi_agrees_with_the_critical_difference():
    scores = _random_scores(12, 5, seed=3)
    ranks = average_ranks(scores, lower_is_better=True)
    pvalues = nemenyi(scores, lower_is_better=True)
    cd = critical_difference(5, 12)
    for i in scores.columns:
        for j in scores.columns:
            if i != j:
                assert (pvalues.loc[i, j] < 0.05) == (abs(ranks[i] - ranks[j]) > cd)
    assert (pvalues.to_numpy() < 0.05).any()  # the check above covers both outcomes


def test_nemenyi_ignores_incomplete_blocks():
    scores = _random_scores(8, 3, seed=4)
    with_gap = pd.concat([scores, pd.DataFrame({"m0": [0.0], "m1": [NAN], "m2": [9.0]})])
    pd.testing.assert_frame_equal(
        nemenyi(with_gap, lower_is_better=True), nemenyi(scores, lower_is_better=True)
    )


@pytest.mark.parametrize(("k", "q"), [(3, 2.344), (4, 2.569), (10, 3.164)])
def test_critical_difference_uses_demsars_q(k, q):
    n = 7
    assert critical_difference(k, n) == pytest.approx(
        q * math.sqrt(k * (k + 1) / (6 * n)), abs=1e-3
    )


def test_critical_difference_of_demsars_example():
    # Demšar 2006 worked example: four classifiers on 14 data sets, CD = 1.25 at α = 0.05.
    assert critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


# --- cd_diagram --------------------------------------------------------------------------------


def _texts(fig) -> str:
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    return "\n".join(texts)


def test_cd_diagram_names_every_method_without_pyplot_figures():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    before = plt.get_fignums()
    scores = _random_scores(6, 4, seed=5).rename(columns=lambda c: f"method-{c}")
    fig = cd_diagram(scores, lower_is_better=False, title="PCK@0.05")
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 1
    text = _texts(fig)
    for method in scores.columns:
        assert method in text
    assert "CD = " in text
    assert "PCK@0.05" in text
    assert plt.get_fignums() == before


def test_cd_diagram_labels_show_the_average_ranks():
    fig = cd_diagram(FRIEDMAN_TABLE, lower_is_better=True)
    text = _texts(fig)
    assert "A (1.25)" in text
    assert "(2.75) C" in text


def test_cd_diagram_needs_three_methods():
    with pytest.raises(DabenchError, match="at least 3 methods and 2 pairs"):
        cd_diagram(FRIEDMAN_TABLE[["A", "B"]], lower_is_better=True)


def test_cd_diagram_needs_two_complete_blocks():
    with pytest.raises(DabenchError, match="at least 3 methods and 2 pairs"):
        cd_diagram(FRIEDMAN_TABLE.iloc[:1], lower_is_better=True)


# --- holm --------------------------------------------------------------------------------------


def test_holm_adjusts_step_down():
    # Sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone: 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_passes_nan_through_and_does_not_count_it():
    adjusted = holm([NAN, 0.01, 0.04, 0.03])
    assert math.isnan(adjusted[0])
    assert adjusted[1:] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
    assert all(math.isnan(p) for p in holm([NAN, NAN]))


def test_holm_rejects_values_that_are_not_p_values():
    with pytest.raises(DabenchError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


# --- import cost -------------------------------------------------------------------------------


def test_importing_the_module_stays_light():
    code = (
        "import sys, bench.report.stats; "
        "print(sorted(m for m in ('torch', 'matplotlib', 'scikit_posthocs', 'statsmodels', "
        "'seaborn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_method_missing_on_some_pair_leaves_the_ranks_not_the_pairs():
    import pandas as pd

    from bench.report.comparisons import comparable

    scores = pd.DataFrame(
        {"a": [1.0, 2.0, 3.0], "b": [2.0, 1.0, 4.0], "c": [None, 0.5, None]},
        index=["p1", "p2", "p3"],
    )
    kept, left = comparable(scores)
    assert left == ["c"] and list(kept.columns) == ["a", "b"] and len(kept.dropna()) == 3
    # a method missing everywhere but one pair of two: dropping it still keeps more pairs
    full = scores.fillna(0.1)
    assert comparable(full)[1] == []  # complete: nothing left out
    # when leaving methods out would not keep more complete pairs, nothing is left out
    sparse = pd.DataFrame({"a": [1.0, None], "b": [None, 2.0]}, index=["p1", "p2"])
    assert comparable(sparse)[1] == []
