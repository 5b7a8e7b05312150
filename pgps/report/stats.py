"""The article's statistics (SPEC section 3), as pure functions on numbers.

Dice values may be fractions or percent: every measure here is a ratio or a rank statistic, so
the unit cancels (standard deviations keep the unit they are given in).

Conventions, each checked against the article's own numbers in ``tests/test_stats.py``:

- relative Dice = Dice / CPS Dice of the same dataset, both 5-fold means (Table 1's
  "Rel. Dice score" is ``(relative Dice - 1) x 100``);
- normalized average = mean over datasets of Dice / CPS Dice, x 100 (Table 1, Table D.9);
- paired Wilcoxon signed-rank tests run on the relative Dice of each dataset (one pair per
  dataset), two-sided, zero differences dropped, exact null distribution up to 50 pairs: this
  reproduces Section 4.1.1's p-values (0.0001, 0.0103, 0.6788) from Table 1's Dice columns;
- spread over datasets of relative runtime/FLOPs is the sample SD (ddof=1), as Table 1's
  "89 ± 8.7" for PGPS-Performance's runtime;
- inter-method SD is the population SD (ddof=0) of the methods' mean Dice, intra-method SD the
  mean over methods of each method's SD over folds (also ddof=0), as Table D.8 (KiTS23).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

EXACT_WILCOXON_MAX = 50
"""Up to this many non-zero pairs the Wilcoxon p-value uses the exact null distribution."""


def relative(value: float, baseline: float) -> float:
    """``value / baseline``; NaN when either is missing or the baseline is not positive."""
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return math.nan
    return value / baseline


def normalized_average(values: Sequence[float], baselines: Sequence[float]) -> tuple[float, int]:
    """``(mean of value/baseline x 100, n)`` over the pairs where both exist (NaN, 0 if none)."""
    ratios = [relative(v, b) for v, b in zip(values, baselines, strict=True)]
    ratios = [r for r in ratios if math.isfinite(r)]
    return (100.0 * float(np.mean(ratios)), len(ratios)) if ratios else (math.nan, 0)


def wilcoxon_paired(x: Sequence[float], y: Sequence[float], alternative: str = "two-sided") -> dict[str, float]:
    """Paired Wilcoxon signed-rank test of ``x`` against ``y`` (two-sided unless ``alternative`` is scipy's
    ``"greater"`` or ``"less"``: the differences ``x - y`` tend to be larger / smaller than 0).

    Pairs with a missing value are left out; zero differences (within 1e-12) are dropped
    (Wilcoxon's original treatment). Returns ``n`` (non-zero pairs used), ``statistic`` (scipy's: the
    smaller rank sum when two-sided, the positive one otherwise), ``p_value`` and ``median_difference``
    (of x - y); NaN where fewer than one non-zero pair remains.
    """
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[np.isfinite(d)]
    median = float(np.median(d)) if d.size else math.nan
    d = d[np.abs(d) > 1e-12]
    out = {"n": int(d.size), "statistic": math.nan, "p_value": math.nan, "median_difference": median}
    if d.size == 0:
        return out
    method = "exact" if d.size <= EXACT_WILCOXON_MAX else "asymptotic"
    res = scipy_stats.wilcoxon(d, zero_method="wilcox", method=method, alternative=alternative)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Spearman's rank correlation ``rho`` with its two-sided ``p_value`` over the pairs where both
    values exist; ``n`` pairs. NaN with fewer than 3 pairs or a constant variable."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": int(a.size), "rho": math.nan, "p_value": math.nan}
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    res = scipy_stats.spearmanr(a, b)
    out.update(rho=float(res.statistic), p_value=float(res.pvalue))
    return out


def win_counts(outcomes: Mapping[str, Sequence[float]]) -> dict[str, int]:
    """How often each strategy beats all others, over every combination of one outcome per strategy.

    ``outcomes`` maps a strategy to its repeated-run scores (missing ones left out). With three
    strategies of five seeds each, that is the article's 5 x 5 x 5 = 125 triplets (Section 3.6);
    a combination with a tie for the best score is a win for nobody. The number of combinations
    is :func:`combinations`.
    """
    names = list(outcomes)
    values = [[v for v in outcomes[n] if math.isfinite(v)] for n in names]
    wins = dict.fromkeys(names, 0)
    if len(names) < 2 or any(not v for v in values):
        return wins
    for combo in itertools.product(*values):
        best = max(combo)
        winners = [n for n, v in zip(names, combo, strict=True) if v == best]
        if len(winners) == 1:
            wins[winners[0]] += 1
    return wins


def combinations(outcomes: Mapping[str, Sequence[float]]) -> int:
    """Number of combinations :func:`win_counts` ranks (the product of the finite outcomes per strategy)."""
    return math.prod(sum(1 for v in values if math.isfinite(v)) for values in outcomes.values())


def sd_ratio(fold_scores: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Inter/intra-method standard deviation ratio of nnU-Net Revisited (article Appendix D).

    ``fold_scores`` maps a method (backbone) to its per-fold scores. Intra-method SD = mean over
    methods of the SD over that method's folds; inter-method SD = SD of the methods' mean scores;
    both population SDs (ddof=0). ``ratio`` = inter / intra; ``methods`` = methods with scores.
    NaN with fewer than two methods.
    """
    scores = {m: [v for v in vs if math.isfinite(v)] for m, vs in fold_scores.items()}
    scores = {m: vs for m, vs in scores.items() if vs}
    out = {"methods": len(scores), "intra_sd": math.nan, "inter_sd": math.nan, "ratio": math.nan}
    if not scores:
        return out
    out["intra_sd"] = float(np.mean([np.std(vs) for vs in scores.values()]))
    if len(scores) >= 2:
        out["inter_sd"] = float(np.std([np.mean(vs) for vs in scores.values()]))
        if out["intra_sd"] > 0:
            out["ratio"] = out["inter_sd"] / out["intra_sd"]
    return out


def virtual_relative_runtime(train_time_s: float, p_max_mean_epoch_time_s: float, epochs: float) -> float:
    """Section 3.2.2: a run's training time over (its mean ``P_max``-stage epoch time x epochs).

    The mean ``P_max`` epoch time stands for one CPS epoch on the same hardware, so this is the
    run's runtime relative to CPS (CPS itself: 1). NaN when an input is missing or not positive.
    """
    denominator = p_max_mean_epoch_time_s * epochs
    if not (math.isfinite(train_time_s) and math.isfinite(denominator)) or denominator <= 0:
        return math.nan
    return train_time_s / denominator


def mean_sd(values: Sequence[float], ddof: int = 1) -> tuple[float, float, int]:
    """``(mean, SD, n)`` of the finite values: the sample SD (``ddof=1``, the journal's "± x") or the population
    SD (``ddof=0``, the MICCAI 2024 paper's); SD NaN with fewer than ``ddof + 1`` values."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=ddof)) if v.size > ddof else math.nan, int(v.size)


def standard_error(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, standard error of the mean, n)`` of the finite values (``scipy.stats.sem``, ddof=1); SE NaN
    below two values. The MICCAI 2024 paper's Figure 3 error bars."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(scipy_stats.sem(v)) if v.size > 1 else math.nan, int(v.size)


def paired_ttest(x: Sequence[float], y: Sequence[float], alternative: str) -> dict[str, float]:
    """Paired t-test of ``x`` against ``y`` (``scipy.stats.ttest_rel``), ``alternative`` "greater", "less" or
    "two-sided"; pairs with a missing value are left out. Returns ``n``, ``statistic``, ``p_value`` and
    ``mean_difference`` (of x - y); NaN below two pairs or when every difference is equal."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    out = {"n": int(a.size), "statistic": math.nan, "p_value": math.nan}
    out["mean_difference"] = float(np.mean(a - b)) if a.size else math.nan
    if a.size < 2 or np.ptp(a - b) == 0:
        return out
    res = scipy_stats.ttest_rel(a, b, alternative=alternative)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


def wilcoxon_min_pairs(alpha: float = 0.05) -> int:
    """The fewest non-zero pairs with which the exact two-sided Wilcoxon signed-rank test can reach ``p < alpha``
    (6 for 0.05: with all differences of one sign, p = 2 / 2**n). Fewer pairs cannot show a difference."""
    n = 1
    while scipy_stats.wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue >= alpha:
        n += 1
    return n
