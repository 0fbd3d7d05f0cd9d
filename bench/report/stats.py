"""Statistics for comparing methods over seeds and DA pairs: confidence intervals, paired tests,
Friedman with Iman–Davenport, Nemenyi post-hoc, critical-difference diagrams, Holm correction.

Torch-free so ``dabench report`` starts fast. scikit-posthocs and statsmodels are imported inside
the functions that need them: importing scikit-posthocs imports matplotlib.pyplot and seaborn
(seconds, and a GUI backend choice) even when no plot is drawn.

Conventions (Demšar 2006, JMLR 7:1–30): a *block* is one unit every method was evaluated on (a DA
pair, a (pair, seed), or a pair averaged over seeds); ``scores`` frames have blocks as rows and
methods as columns; rank 1 is the best method of a block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from bench.errors import DabenchError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CONFIDENCE",
    "FriedmanResult",
    "Interval",
    "PairedComparison",
    "average_ranks",
    "cd_diagram",
    "critical_difference",
    "friedman",
    "holm",
    "mean_ci",
    "min_wilcoxon_p",
    "nemenyi",
    "paired_comparison",
]

CONFIDENCE: float = 0.95
NEMENYI_ALPHA = 0.05
# Differences are rounded to this precision relative to the inputs' magnitude: float noise such as
# (0.3 - 0.1) - 0.2 would otherwise make exact ties look different (as SciPy's wilcoxon docs warn).
_RELATIVE_DECIMALS = 9

_NAN = float("nan")


def _finite_1d(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise DabenchError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise DabenchError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval; ``n`` is the number of finite values used."""

    mean: float
    low: float
    high: float
    half_width: float
    n: int


def mean_ci(values: ArrayLike, confidence: float = CONFIDENCE) -> Interval:
    """Mean ± Student-t confidence interval of per-seed values: mean ± t_{(1+c)/2, n-1}·s/√n.

    Student-t, not bootstrap: with the usual 3–5 seeds a bootstrap resamples from so few values
    that its interval is too narrow and unstable, while t accounts for the small n exactly under
    normality. NaN/inf values (failed or diverged runs) are dropped first. n == 0 gives all NaN;
    n == 1 gives the mean only (low/high/half_width NaN: one value has no spread).
    """
    _check_confidence(confidence)
    array = _finite_1d(values, "values")
    array = array[np.isfinite(array)]
    n = int(array.size)
    if n == 0:
        return Interval(_NAN, _NAN, _NAN, _NAN, 0)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, _NAN, _NAN, _NAN, 1)
    sem = float(array.std(ddof=1)) / math.sqrt(n)
    # Computed directly: scipy's t.interval returns NaN when the scale (sem) is 0, but identical
    # values have a well-defined zero-width interval.
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, half, n)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can reach with ``n``
    non-zero paired differences: 2 / 2**n (all differences of one sign). n = 4 gives 0.125 and
    n = 5 gives 0.0625, so fewer than 6 seeds can never be significant at 0.05 with this test."""
    if n < 1:
        return _NAN
    return min(1.0, 2.0 / 2.0**n)


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison of methods a and b (difference = a - b) on the same seeds/pairs.

    ``reason`` is "" when every statistic was computed. When ``possible`` is False it says why no
    test could be computed (all statistics NaN). When ``possible`` is True but the differences are
    all equal and non-zero, the t-test is undefined (zero variance) and only the Wilcoxon fields
    are set; ``reason`` then says so.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_statistic: float
    t_pvalue: float
    w_statistic: float
    w_pvalue: float
    possible: bool
    reason: str
    min_wilcoxon_p: float


def _round_relative(differences: np.ndarray, scale: float) -> np.ndarray:
    if scale == 0.0 or not math.isfinite(scale):
        return differences
    decimals = _RELATIVE_DECIMALS - math.floor(math.log10(scale))
    return np.round(differences, decimals)


def paired_comparison(a: ArrayLike, b: ArrayLike) -> PairedComparison:
    """Paired t-test and Wilcoxon signed-rank test of a against b, both two-sided.

    ``a`` and ``b`` are aligned (the same seeds or pairs in the same order); a pair where either
    value is not finite is dropped. The differences are rounded to 1e-9 of the inputs' magnitude
    before testing so float noise does not create spurious non-zero differences or broken ties.
    The t-test is ``scipy.stats.ttest_rel`` (run as ``ttest_1samp`` on the rounded differences,
    which is the same test) and its CI is the t-interval of the mean difference at CONFIDENCE.
    Wilcoxon uses SciPy's ``method="auto"`` (exact for small n) and drops zero differences, so
    ``min_wilcoxon_p`` is computed from the non-zero differences. Report the CI and effect size,
    not only p: with 3–5 seeds neither test has much power.
    """
    x = _finite_1d(a, "a")
    y = _finite_1d(b, "b")
    if x.shape != y.shape:
        raise DabenchError(f"paired values must be aligned: a has {x.size} values, b has {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)

    def impossible(reason: str, mean_diff: float = _NAN) -> PairedComparison:
        return PairedComparison(
            n, mean_diff, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, False, reason, min_wilcoxon_p(n)
        )

    if n < 2:
        noun = "observation" if n == 1 else "observations"
        mean = float((x - y).mean()) if n else _NAN
        return impossible(f"{n} paired {noun}: no test is possible", mean)

    scale = float(max(np.abs(x).max(), np.abs(y).max()))
    d = _round_relative(x - y, scale)
    mean_diff = float(d.mean())
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return impossible("all differences are zero: the methods give identical values", 0.0)

    w = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    w_stat, w_p = float(w.statistic), float(w.pvalue)
    if np.all(d == d[0]):
        # Zero variance: SciPy returns t = ±inf and p = 0, which would print as a certain effect
        # from as few as two seeds.
        return PairedComparison(
            n,
            mean_diff,
            _NAN,
            _NAN,
            _NAN,
            _NAN,
            w_stat,
            w_p,
            True,
            "all differences are equal: the t-test is undefined (zero variance)",
            min_wilcoxon_p(nonzero),
        )
    t = stats.ttest_1samp(d, 0.0, alternative="two-sided")
    ci = t.confidence_interval(confidence_level=CONFIDENCE)
    return PairedComparison(
        n,
        mean_diff,
        float(ci.low),
        float(ci.high),
        float(t.statistic),
        float(t.pvalue),
        w_stat,
        w_p,
        True,
        "",
        min_wilcoxon_p(nonzero),
    )


def _complete_blocks(scores: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise DabenchError(f"scores must be a DataFrame (blocks × methods), got {type(scores)}")
    if scores.shape[1] == 0:
        raise DabenchError("scores has no method columns")
    if not scores.columns.is_unique:
        duplicated = sorted({str(c) for c in scores.columns[scores.columns.duplicated()]})
        raise DabenchError(f"scores has duplicate method columns: {', '.join(duplicated)}")
    try:
        values = scores.astype(float)
    except (TypeError, ValueError) as err:
        raise DabenchError(f"scores must be numeric: {err}") from None
    complete = values.dropna(axis=0, how="any")
    if complete.empty:
        raise DabenchError(
            f"no complete block: each of the {len(scores)} blocks lacks a value for at least one "
            f"method ({', '.join(map(str, scores.columns))})"
        )
    return complete


def _block_ranks(complete: pd.DataFrame, lower_is_better: bool) -> np.ndarray:
    values = complete.to_numpy()
    return stats.rankdata(values if lower_is_better else -values, method="average", axis=1)


def average_ranks(scores: pd.DataFrame, lower_is_better: bool) -> pd.Series:
    """Average rank of each method over blocks (1 = best; ties share the average rank).

    ``scores``: rows = blocks, columns = methods. A block where any method is NaN is dropped: a
    method missing on a block cannot be ranked fairly against the others there, and ranking only
    the present methods would mix rank scales. Infinite values rank as extreme (a diverged run is
    the worst). Returns a Series indexed by method, best first (ties keep the column order).
    Raises DabenchError when no complete block remains.
    """
    complete = _complete_blocks(scores)
    ranks = _block_ranks(complete, lower_is_better).mean(axis=0)
    result = pd.Series(ranks, index=complete.columns, name="average_rank")
    return result.sort_values(kind="stable")


@dataclass(frozen=True, eq=False)
class FriedmanResult:
    """Friedman test of k methods over n complete blocks, with the Iman–Davenport F correction
    (Demšar 2006 recommends it: the χ² approximation is conservative). ``eq=False`` because a
    Series field has no single truth value."""

    k: int
    n: int
    statistic: float
    pvalue: float
    iman_davenport: float
    iman_davenport_pvalue: float
    ranks: pd.Series
    possible: bool
    reason: str


def friedman(scores: pd.DataFrame, lower_is_better: bool) -> FriedmanResult:
    """Friedman χ² (``scipy.stats.friedmanchisquare``, tie-corrected) and Iman–Davenport
    F = (n-1)χ² / (n(k-1) - χ²) with (k-1, (k-1)(n-1)) degrees of freedom, on complete blocks.

    Needs k >= 3 methods and n >= 2 complete blocks; otherwise ``possible`` is False and the
    statistics are NaN (the ranks are still given). With few blocks (e.g. 3 DA pairs) the
    χ² approximation is poor; prefer the Iman–Davenport p-value. Raises DabenchError when no
    complete block exists.
    """
    complete = _complete_blocks(scores)
    ranks = average_ranks(complete, lower_is_better)
    n, k = complete.shape

    def impossible(reason: str) -> FriedmanResult:
        return FriedmanResult(k, n, _NAN, _NAN, _NAN, _NAN, ranks, False, reason)

    if k < 3:
        return impossible(f"the Friedman test needs at least 3 methods, got {k}")
    if n < 2:
        return impossible(f"the Friedman test needs at least 2 complete blocks, got {n}")
    values = complete.to_numpy()
    if np.all(values == values[:, :1]):
        return impossible("every method ties on every block: the Friedman statistic is undefined")

    # The statistic is the same whichever direction is "better": reversing ranks keeps Σ(R_j-R̄)².
    result = stats.friedmanchisquare(*(values[:, j] for j in range(k)))
    chi2 = float(result.statistic)
    denominator = n * (k - 1) - chi2
    if denominator <= 0:
        # χ² reaches its maximum n(k-1) when every block ranks the methods identically: F → ∞.
        f_stat, f_p = math.inf, 0.0
    else:
        f_stat = (n - 1) * chi2 / denominator
        f_p = float(stats.f.sf(f_stat, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(k, n, chi2, float(result.pvalue), f_stat, f_p, ranks, True, "")


def nemenyi(scores: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """All-pairs Nemenyi post-hoc p-values (methods × methods, ones on the diagonal) from
    ``scikit_posthocs.posthoc_nemenyi_friedman`` on the complete blocks.

    That function ranks each block in ascending order (the lowest value gets rank 1), so scores are
    negated when higher is better to keep rank 1 = best. The p-values depend only on |R_i - R_j|
    and so are the same in both directions; the sign flip keeps the convention uniform. Use it as
    a post-hoc of a significant Friedman test; with few blocks it has little power.
    """
    import scikit_posthocs as sp

    complete = _complete_blocks(scores)
    if complete.shape[1] < 2:
        raise DabenchError("the Nemenyi test needs at least 2 methods")
    oriented = complete if lower_is_better else -complete
    # A plain float matrix with a fresh index makes the library take its complete-block path
    # (it re-melts frames with odd dtypes or index names).
    matrix = pd.DataFrame(oriented.to_numpy(dtype=float), columns=complete.columns)
    pvalues = sp.posthoc_nemenyi_friedman(matrix)
    pvalues.index = complete.columns
    pvalues.columns = complete.columns
    return pvalues


def critical_difference(k: int, n: int, alpha: float = NEMENYI_ALPHA) -> float:
    """Nemenyi critical difference CD = q_α · sqrt(k(k+1)/(6n)) (Demšar 2006) for k methods on n
    blocks: average ranks further apart than CD differ at level alpha. q_α is the studentized
    range quantile / √2, the same distribution the Nemenyi p-values use, so the CD line and the
    bars of a diagram agree."""
    if k < 2 or n < 1:
        raise DabenchError(
            f"a critical difference needs k >= 2 methods and n >= 1 blocks: {k}, {n}"
        )
    q_alpha = float(stats.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))


def cd_diagram(scores: pd.DataFrame, lower_is_better: bool, title: str | None = None) -> Figure:
    """A critical-difference diagram: average ranks on an axis (best on the left), methods not
    significantly different (Nemenyi, alpha 0.05) joined by bars, and the CD drawn above the axis
    from its left end.

    Drawn on a new ``matplotlib.figure.Figure`` (no pyplot state, no GUI); save it with
    ``fig.savefig(path, bbox_inches="tight")`` so long method names are not cut. Needs at least
    3 methods and 2 complete blocks (raises DabenchError otherwise). With few blocks, e.g. 3 DA
    pairs, almost nothing can be significant and the diagram is mostly decorative.
    """
    import scikit_posthocs as sp
    from matplotlib.figure import Figure

    complete = _complete_blocks(scores)
    n, k = complete.shape
    if k < 3 or n < 2:
        raise DabenchError(
            "a CD diagram needs at least 3 methods and 2 pairs (complete blocks); "
            f"got {k} methods and {n} complete blocks"
        )
    ranks = average_ranks(complete, lower_is_better)
    pvalues = nemenyi(complete, lower_is_better)
    cd = critical_difference(k, n, NEMENYI_ALPHA)

    fig = Figure(figsize=(7.0, 3.0))
    ax = fig.add_subplot()
    # The library expects lower rank = better (it sorts ranks ascending and puts them left).
    sp.critical_difference_diagram(
        ranks,
        pvalues,
        alpha=NEMENYI_ALPHA,
        ax=ax,
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
    )
    # The CD bar is drawn here, not by the library: its bar sits half a unit above the axis, on
    # top of the rank tick labels. One y unit (one label row) is given a fixed height instead.
    unit_in, top = 0.25, 2.6
    bottom = ax.get_ylim()[0]
    ax.set_ylim(bottom, top)
    ax.plot([1.0, 1.0 + cd], [1.6, 1.6], color="k", linewidth=2)
    ax.text(1.0 + cd / 2, 1.75, f"CD = {cd:.2f}", ha="center", va="bottom")
    # The full rank scale, so diagrams of the same k are comparable; room left and right for labels.
    ax.set_xlim(1.0, float(k))
    title_in, margin_in = (0.45 if title else 0.0), 0.1
    height = (top - bottom) * unit_in + title_in + margin_in
    fig.set_size_inches(7.0, height)
    fig.subplots_adjust(
        left=0.25, right=0.75, top=1.0 - title_in / height, bottom=margin_in / height
    )
    if title:
        fig.suptitle(title)
    return fig


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (``statsmodels`` ``multipletests(method="holm")``), for
    reports that make several paired comparisons (pairs × metrics). NaN p-values (comparisons
    that were not possible) pass through as NaN and do not count as tests."""
    from statsmodels.stats.multitest import multipletests

    array = np.asarray(pvalues, dtype=float).reshape(-1)
    present = ~np.isnan(array)
    if not np.all((array[present] >= 0.0) & (array[present] <= 1.0)):
        raise DabenchError(f"p-values must lie in [0, 1], got {array[present].tolist()}")
    adjusted = np.full(array.shape, np.nan)
    if present.any():
        adjusted[present] = multipletests(array[present], method="holm")[1]
    return [float(p) for p in adjusted]
