"""The statistics of pgps.report.stats: hand-checkable inputs, and the article's own numbers.

Article = Fischer et al., Medical Image Analysis 2026 (../shared/papers/pgps-journal-2026.md; that
conversion has no page numbers, so "l." below is its line). Its numbers are read from the
published-value files pgps ships (pgps/report/published/*.csv, typed in from the article).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pgps.report import stats
from pgps.report.datasets import UNMIRRORED_DATASETS
from pgps.report.published import load_published
from pgps.report.tables import table1

JOURNAL = ("cps", "efficiency", "performance")


# -- hand-checkable inputs ----------------------------------------------------------------------------
def test_relative_and_normalized_average():
    assert stats.relative(0.84, 0.80) == pytest.approx(1.05)
    assert math.isnan(stats.relative(0.5, 0.0)) and math.isnan(stats.relative(math.nan, 0.8))
    value, n = stats.normalized_average([0.88, 0.55, math.nan, 0.3], [0.80, 0.50, 0.7, math.nan])
    assert (value, n) == (pytest.approx(110.0), 2)
    assert stats.normalized_average([math.nan], [1.0]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_wilcoxon_hand_computed():
    # five positive differences: the exact two-sided p is 2 / 2**5; the smaller rank sum is 0
    r = stats.wilcoxon_paired([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])
    assert r["n"] == 5 and r["statistic"] == 0 and r["p_value"] == pytest.approx(2 / 32)
    # a zero difference and a missing pair are left out; ranks of |d| = 1, 2, 3 with signs +, -, +
    r = stats.wilcoxon_paired([1.0, 2.0, 0.0, 5.0, math.nan], [0.0, 4.0, 0.0, 2.0, 1.0])
    assert r["n"] == 3 and r["statistic"] == 2.0  # min(1 + 3, 2)
    assert r["median_difference"] == pytest.approx(0.5)  # of 1, -2, 0, 3 (zeros count for the median)
    assert math.isnan(stats.wilcoxon_paired([1, 2], [1, 2])["p_value"])


def test_spearman_hand_computed():
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 45])["rho"] == pytest.approx(1.0)
    r = stats.spearman([1, 2, 3, 4, math.nan], [4, 3, 2, 1, 0])
    assert r["rho"] == pytest.approx(-1.0) and r["n"] == 4
    assert math.isnan(stats.spearman([1, 2], [1, 2])["rho"])  # fewer than three pairs
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3])["rho"])  # constant


def test_win_counts_hand_computed():
    outcomes = {"a": [3.0], "b": [1.0, 2.0], "c": [0.0, 4.0]}
    # (3,1,0) a, (3,1,4) c, (3,2,0) a, (3,2,4) c
    assert stats.win_counts(outcomes) == {"a": 2, "b": 0, "c": 2}
    assert stats.combinations(outcomes) == 4
    # a tie for the best is nobody's win; missing outcomes are left out of the combinations
    assert stats.win_counts({"a": [1.0], "b": [1.0, math.nan], "c": [0.0]}) == {"a": 0, "b": 0, "c": 0}
    five = {m: [float(i + k) for i in range(5)] for k, m in enumerate(JOURNAL)}
    assert stats.combinations(five) == 125  # Section 3.6: 5 x 5 x 5 triplets
    assert sum(stats.win_counts(five).values()) <= 125


def test_sd_ratio_hand_computed():
    r = stats.sd_ratio({"m1": [1.0, 3.0], "m2": [4.0, 6.0]})
    # SD over folds (ddof=0): 1 and 1 -> intra 1; means 2 and 5 -> population SD 1.5
    assert (r["intra_sd"], r["inter_sd"], r["ratio"], r["methods"]) == (1.0, 1.5, 1.5, 2)
    one = stats.sd_ratio({"m1": [1.0, 3.0], "m2": [math.nan]})
    assert one["methods"] == 1 and one["intra_sd"] == 1.0 and math.isnan(one["ratio"])


def test_virtual_relative_runtime_and_mean_sd():
    assert stats.virtual_relative_runtime(90.0, 10.0, 10) == pytest.approx(0.9)
    assert math.isnan(stats.virtual_relative_runtime(90.0, math.nan, 10))
    assert math.isnan(stats.virtual_relative_runtime(90.0, 0.0, 10))
    mean, sd, n = stats.mean_sd([1.0, 3.0, math.nan])
    assert (mean, n) == (2.0, 2) and sd == pytest.approx(math.sqrt(2))


# -- the article's own numbers -------------------------------------------------------------------------
def _published_table1() -> pd.DataFrame:
    t = load_published("table1")
    return t.pivot(index="row", columns="column", values="value")


def _article_dice() -> pd.DataFrame:
    """Table 1's Dice columns (l. 213-227), one row per dataset."""
    t = _published_table1().drop(index="norm_avg")
    return t[[f"dice.{m}" for m in JOURNAL]]


def _rounding_interval(a: float, b: float, digits: int = 2) -> tuple[float, float]:
    """Range of (a / b - 1) x 100 when a and b are only known rounded to ``digits`` decimals."""
    h = 0.5 * 10**-digits
    return 100 * ((a - h) / (b + h) - 1), 100 * ((a + h) / (b - h) - 1)


def test_table1_relative_dice_reproduce_from_its_dice_columns():
    """Table 1's Δ rel. Dice columns (l. 213-227) from its Dice columns: all 28 within the rounding of
    the printed Dice, except PGPS-Eff on MSD Heart (printed -0.07) and MSD Hippocampus (0.20), which
    no Dice values that round to the printed ones give (a documented inconsistency of the article)."""
    dice, printed = _article_dice(), _published_table1()
    off = set()
    for dataset, row in dice.iterrows():
        for mode in ("efficiency", "performance"):
            lo, hi = _rounding_interval(row[f"dice.{mode}"], row["dice.cps"])
            value = printed.at[dataset, f"reldice.{mode}"]
            if not lo - 0.005 <= value <= hi + 0.005:
                off.add((dataset, mode))
            assert 100 * (row[f"dice.{mode}"] / row["dice.cps"] - 1) == pytest.approx(value, abs=0.025)
    assert off == {("MSD_Heart", "efficiency"), ("MSD_Hippocampus", "efficiency")}


def test_table1_normalized_average_reproduces():
    """Table 1, Norm. Avg. (l. 228): 100.47 (PGPS-Eff) and 101.26 (PGPS-Perf), i.e. +0.47% and +1.26%."""
    dice = _article_dice()
    for mode, printed in (("cps", 100.00), ("efficiency", 100.47), ("performance", 101.26)):
        value, n = stats.normalized_average(dice[f"dice.{mode}"], dice["dice.cps"])
        assert n == 15 and round(value, 2) == printed


def test_table1_builder_reproduces_relative_rows_from_a_results_table():
    """The Table 1 renderer, fed one fold per dataset with Table 1's Dice, gives its Δ rel. Dice and
    Norm. Avg. rows (within 0.025 where the article itself is off, see the test above)."""
    dice, printed = _article_dice(), _published_table1()
    rows = [
        {"dataset": d, "mode": m, "fold": 0, "mirroring": d not in UNMIRRORED_DATASETS,  # as the article's grid
         "dice": dice.at[d, f"dice.{m}"] / 100, "train_time_s": math.nan,
         "p_max_mean_epoch_time_s": math.nan, "epochs": math.nan, "iterated_voxels": math.nan}
        for d in dice.index for m in JOURNAL
    ]  # fmt: skip
    t = table1(pd.DataFrame(rows))
    for d in dice.index:
        for m in ("efficiency", "performance"):
            assert t.value(d, f"reldice.{m}") == pytest.approx(printed.at[d, f"reldice.{m}"], abs=0.025)
    for m in JOURNAL:
        assert round(t.value("norm_avg", f"dice.{m}"), 2) == printed.at["norm_avg", f"dice.{m}"]
    assert round(t.value("norm_avg", "reldice.performance"), 2) == 1.26


def test_wilcoxon_p_values_of_section_4_1_1():
    """Section 4.1.1 (l. 261): p ≈ 0.0001 (Perf vs CPS), 0.0103 (Perf vs Eff), 0.6788 (Eff vs CPS), from
    Table 1's Dice columns: the paired test runs on relative Dice (Dice / CPS Dice)."""
    dice = _article_dice()
    rel = {m: dice[f"dice.{m}"] / dice["dice.cps"] for m in JOURNAL}
    for (a, b), p in {("performance", "cps"): 0.0001, ("performance", "efficiency"): 0.0103,
                      ("efficiency", "cps"): 0.6788}.items():  # fmt: skip
        assert round(stats.wilcoxon_paired(rel[a], rel[b])["p_value"], 4) == p
    # Perf vs CPS: MSD Heart ties (93.29 both), so 14 pairs, all positive: exact p = 2 / 2**14
    assert stats.wilcoxon_paired(rel["performance"], rel["cps"])["p_value"] == pytest.approx(2 / 2**14)


def test_table1_runtime_and_flops_spread_of_pgps_performance():
    """Table 1, Norm. Avg. (l. 228): PGPS-Perf runtime 89 ± 8.7 and FLOPs 88 ± 2.4 are mean ± sample SD of
    its rows. (PGPS-Eff's 44 ± 9.5 and 33 ± 2.6 do not follow from its rows; see published/README.md.)"""
    t = _published_table1().drop(index="norm_avg")
    for column, mean, sd in (("runtime.performance", 89, 8.7), ("flops.performance", 88, 2.4)):
        m, s, n = stats.mean_sd(t[column])
        assert n == 15 and round(m) == mean and s == pytest.approx(sd, abs=0.06)
    m, _, _ = stats.mean_sd(t["flops.efficiency"])
    assert round(m) == 31  # the article prints 33


def test_table_d9_normalized_averages():
    """Table D.9 (l. 633): normalized average over the ten MSD tasks 100.94, 101.72, 100.66, 101.04."""
    t = load_published("tableD9").pivot(index="row", columns="column", values="value")
    msd = t.drop(index=["norm_avg", "flops"])
    assert len(msd) == 10
    for mode in ("efficiency", "performance", "miccai", "miccai-plus"):
        value, _ = stats.normalized_average(msd[f"dice.{mode}"], msd["dice.cps"])
        assert round(value, 2) == t.at["norm_avg", f"dice.{mode}"]


def test_table_d8_sd_ratio_against_table_d7():
    """Tables D.7 (l. 598-601) and D.8 (l. 607-613). KiTS23: the inter-method SD is the population SD of
    D.7's four means (1.037 and 0.955 within the means' rounding), the ratio is inter / intra. BTCV: D.8's
    inter-method SD is 10x what D.7's means give (0.074 and 0.133), a documented inconsistency."""
    d7 = load_published("tableD7").pivot(index="row", columns="column", values="value")
    d8 = load_published("tableD8").pivot(index="row", columns="column", values="value")
    for col in d7.columns:
        means = {b: [d7.at[b, col]] for b in d7.index}  # one "fold" each: the SD of the means
        inter = stats.sd_ratio(means)["inter_sd"]
        intra = float(d8.loc[["unet", "resenc_m", "resenc_l", "resenc_xl"], col].mean())
        assert intra == pytest.approx(d8.at["intra", col], abs=0.0101)  # SDs rounded to 0.01, the mean too
        assert 100 * d8.at["inter", col] / d8.at["intra", col] == pytest.approx(d8.at["ratio", col], abs=0.35)
        if col.startswith("KiTS23"):
            assert inter == pytest.approx(d8.at["inter", col], abs=0.005)
        else:
            assert 10 * inter == pytest.approx(d8.at["inter", col], abs=0.01)
