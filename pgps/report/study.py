"""The synthetic study's figures, tables, statistics and claim-by-claim verdicts (``pgps study-report``).

Input: the folder ``pgps collect`` wrote for the study's runs (``results.csv``; ``characteristics.csv``
with each dataset's measured class imbalance) and the study's configuration (``study.json``: the
workflow's ``study`` section, with the decision thresholds). Every number below is computed from
those files; the verdicts follow fixed rules, written here and into ``results.md``.

**Units of comparison.** A *replicate* is one seed: at every level it draws its own dataset and
trains every strategy on it with that seed (:mod:`pgps.experiments.study`). A *pair* is one (level,
seed) dataset at one training length: a PGPS run and the CPS run of the same dataset, seed and
iterations. The (level, seed) pairs share no data and no training, so they are independent; the
tests pool them over the levels (each level has the same number of replicates, so each weighs the
same). The *primary outcome* is the paired Dice difference, in Dice points (100 x the difference of
the held-out Dice fractions). The relative gain (mean Dice / mean CPS Dice of a level, minus 1) is a
secondary, descriptive measure: it is never computed per pair, so a CPS run at Dice 0 never makes it
infinite.

**The tests** (all with exact signed-rank null distributions up to
:data:`pgps.report.stats.EXACT_WILCOXON_MAX` pairs; intervals: Hodges-Lehmann estimates with the
distribution-free interval of the signed-rank test, :func:`hodges_lehmann`), one family, Holm-adjusted
together (:func:`holm`), at ``alpha``:

1. *PGPS-Performance reaches a higher Dice than CPS at the same number of iterations*: two-sided
   Wilcoxon signed-rank test of Performance - CPS at the longest length. Holds: adjusted p < alpha with a
   positive estimate. Fails: adjusted p < alpha with a negative one. Otherwise undecided.
2. *PGPS-Efficiency is on par with CPS with about a third of its FLOPs*: non-inferiority with the margin
   ``noninferiority_margin`` (Dice points / 100, fixed in the configuration before the run): one-sided
   signed-rank test of Efficiency - CPS + margin > 0 at the longest length, the test the ``1 - 2 alpha``
   interval's lower bound inverts. Holds: median relative FLOPs (measured iterated voxels / CPS's) at most
   ``flops_third_max`` and adjusted p < alpha. Fails: FLOPs above the bound, or the whole ``1 - 2 alpha``
   interval below minus the margin (inferior). Otherwise undecided. (The article read a non-significant
   test as "comparable"; absence of a difference is not shown that way, hence the margin.)
3. *Both PGPS modes converge faster, so their advantage is largest for short training*: per mode, (a)
   two-sided test of mode - CPS at the shortest length and (b) two-sided test of the pair's difference at
   the shortest length minus the same dataset's difference at the longest. Holds for the mode: (a) and (b)
   significant (adjusted) and positive. Fails: (a) or (b) significant and negative. The claim holds if it
   holds for both modes and fails if it fails for either. (The article itself reports that
   PGPS-Efficiency converges more slowly than CPS per iteration, Section 4.1.4.)
4. *The gain grows with class imbalance* (Section 4.2): Spearman correlation of Performance - CPS at the
   longest length with the pair's dataset's measured smallest-class frequency. Holds: adjusted p < alpha
   with rho < 0. Fails: adjusted p < alpha with rho > 0.
5. *PGPS-Performance's larger batches add Dice beyond PGPS-Efficiency's small patches*: both modes train
   on the same stage patches; Performance adds batches that keep the voxels per step constant (SPEC).
   Two-sided test of Performance - Efficiency at the longest length. Holds: adjusted p < alpha and
   positive. Fails: adjusted p < alpha and negative (the small patches, not the batches, carry the gain).

Every other number (each comparison at each length, per-level differences, correlations at the other
lengths) is descriptive: reported without a verdict and outside the family.

"Undecided" states what the data cannot tell at this sample size; the report adds the smallest
p-value the number of pairs allows where that is above alpha.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from pgps.experiments.study import RESULTS_MD, RUNS_CSV, STUDY_MODES, dataset_name, level_label
from pgps.io import atomic_write_text
from pgps.report import stats, style
from pgps.report.results import compare_to_cps, load_results
from pgps.report.table import Column, Table, cell, to_csv, to_latex, to_markdown

PGPS_MODES: tuple[str, ...] = ("efficiency", "performance")
SHORT = {"cps": "CPS", "efficiency": "PGPS-Eff", "performance": "PGPS-Perf"}
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
COMPARISONS = (("performance", "cps"), ("efficiency", "cps"), ("performance", "efficiency"))
"""Every pairwise comparison of the study (first minus second)."""


# -- the data ----------------------------------------------------------------------------------------
def runs_table(
    results: pd.DataFrame, characteristics: pd.DataFrame, nnunet_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """One row per run with its dataset's measured shares and the measures against the pair's CPS run:
    ``dice_difference`` (Dice - CPS Dice of the same dataset, seed and length; 0 for CPS itself),
    ``relative_flops`` (iterated voxels), ``relative_time`` (training time / CPS's, both measured on this
    machine) and ``virtual_runtime`` (the article's virtual relative runtime, Sec. 3.2.2). ``run_dir``: the
    run's folder relative to the study's nnU-Net folder ``nnunet_dir`` (no machine's absolute path)."""
    df = compare_to_cps(results)
    df["dice_difference"] = df["dice"] - df["cps_dice"]
    key = ["dataset", "length", "seed"]
    cps_time = df[df["mode"] == "cps"].set_index(key)["train_time_s"]
    df["relative_time"] = df["train_time_s"].to_numpy() / cps_time.reindex(pd.MultiIndex.from_frame(df[key])).to_numpy()
    df["virtual_runtime"] = df["relative_runtime"]
    chars = characteristics.set_index("dataset") if len(characteristics) else pd.DataFrame()
    for column in ("smallest_class_frequency", "foreground_frequency"):
        pairs = zip(df["dataset"], df["seed"], strict=True)
        df[column] = [_measured(chars, level, int(seed), column) for level, seed in pairs]
    df["run_dir"] = [_relative(d, nnunet_dir) for d in df["fold_dir"].fillna("")]
    columns = [
        "dataset", "mode", "length", "seed", "status", "dice", "cps_dice", "dice_difference", "iterated_voxels",
        "relative_flops", "train_time_s", "relative_time", "virtual_runtime", "epochs", "iterations_per_epoch",
        "smallest_class_frequency", "foreground_frequency", "run_dir",
    ]  # fmt: skip
    order = {m: i for i, m in enumerate(STUDY_MODES)}
    share = df.groupby("dataset")["smallest_class_frequency"].transform("mean").fillna(0)
    df = df.assign(_mode=df["mode"].map(order), _share=-share)
    return df.sort_values(["_share", "dataset", "length", "seed", "_mode"])[columns].reset_index(drop=True)


def _measured(chars: pd.DataFrame, level: str, seed: int, column: str) -> float:
    """A measure of the dataset of (level, seed) (``fg1_s3``), or of the level where only that is listed."""
    for name in (dataset_name(level, seed), level):
        if name in chars.index and column in chars:
            return float(chars.at[name, column])
    return math.nan


def _relative(fold_dir: str, nnunet_dir: str | os.PathLike[str] | None) -> str:
    if not fold_dir or nnunet_dir is None or not os.path.isabs(fold_dir):
        return fold_dir
    relative = os.path.relpath(fold_dir, nnunet_dir)
    if relative.startswith(".."):
        raise ValueError(f"run folder {fold_dir} lies outside the study's nnU-Net folder {nnunet_dir}")
    return Path(relative).as_posix()


def levels_of(runs: pd.DataFrame) -> list[str]:
    """The levels from the most balanced to the rarest foreground (mean measured share over the seeds)."""
    shares = runs.groupby("dataset", sort=False)["smallest_class_frequency"].mean()
    return sorted(shares.index, key=lambda d: (-shares[d] if math.isfinite(shares[d]) else 0, d))


def target_share(level: str) -> float:
    """The target foreground share a level's name encodes (``fg0p5`` -> 0.005); NaN for other names."""
    if not level.startswith("fg"):
        return math.nan
    try:
        return float(level[2:].replace("p", ".")) / 100
    except ValueError:
        return math.nan


def label(level: str) -> str:
    share = target_share(level)
    return level_label(share) if math.isfinite(share) else level


def differences(runs: pd.DataFrame, a: str, b: str, length: int) -> pd.Series:
    """Dice of ``a`` minus Dice of ``b`` per (level, seed) pair at ``length`` (pairs where both exist)."""

    def dice(mode: str) -> pd.Series:
        sel = runs[(runs["mode"] == mode) & (runs["length"] == length)]
        return sel.set_index(["dataset", "seed"])["dice"]

    return (dice(a) - dice(b)).dropna()


# -- statistics ---------------------------------------------------------------------------------------------
def signed_rank_null(n: int) -> np.ndarray:
    """Exact null distribution of the signed-rank statistic T+ for ``n`` untied non-zero pairs:
    ``P[t] = P(T+ = t)``, t = 0 .. n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts / 2.0**n


def hodges_lehmann(d: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """``(estimate, lower, upper)``: the Hodges-Lehmann median of paired differences ``d`` (median of the
    Walsh averages) and its distribution-free confidence interval from the signed-rank distribution:
    ``[W_(t+1), W_(M-t)]`` of the sorted Walsh averages (``M = n(n+1)/2``), with ``t`` the largest value
    whose lower tail ``P(T+ <= t)`` is at most ``(1 - confidence) / 2`` (an unbounded side when none is).
    Non-finite values are left out."""
    v = np.asarray([x for x in d if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    i, j = np.triu_indices(v.size)
    walsh = np.sort((v[i] + v[j]) / 2)
    tail = np.cumsum(signed_rank_null(v.size))
    t = int(np.searchsorted(tail, (1 - confidence) / 2, side="right")) - 1  # P(T+ <= t) <= (1 - conf) / 2
    lower = float(walsh[t]) if 0 <= t < walsh.size else -math.inf
    upper = float(walsh[walsh.size - 1 - t]) if t >= 0 and walsh.size - 1 - t >= 0 else math.inf
    return float(np.median(walsh)), lower, upper


def smallest_p(n: int, sides: int = 2) -> float:
    """The smallest p-value an exact signed-rank test of ``n`` non-zero pairs can give (two- or one-sided)."""
    return min(1.0, sides / 2.0**n) if n > 0 else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaNs are left out of the family and stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p[i]))
        out[i] = running
    return out.tolist()


def paired_test(d: Sequence[float], alpha: float, shift: float = 0.0, alternative: str = "two-sided") -> dict:
    """The signed-rank test of the differences ``d`` (``d + shift`` against 0, ``alternative`` as scipy's), with
    the Hodges-Lehmann estimate of ``d`` and its interval: ``1 - alpha`` for a two-sided test, ``1 - 2 alpha``
    (the one the one-sided test at ``alpha`` inverts) otherwise."""
    v = np.asarray(d, dtype=float)
    v = v[np.isfinite(v)]
    r = stats.wilcoxon_paired(v + shift, np.zeros_like(v), alternative=alternative)
    confidence = 1 - alpha if alternative == "two-sided" else 1 - 2 * alpha
    estimate, lower, upper = hodges_lehmann(v, confidence)
    return {
        "pairs": int(v.size), "n": r["n"], "statistic": r["statistic"], "p_value": r["p_value"],
        "estimate": estimate, "lower": lower, "upper": upper, "confidence": confidence,
        "smallest_p": smallest_p(r["n"], 2 if alternative == "two-sided" else 1),
    }  # fmt: skip


# -- the analyses ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Analysis:
    """Everything the tables, figures and verdicts are made of."""

    runs: pd.DataFrame
    levels: list[str]
    lengths: list[int]
    seeds: list[int]
    params: dict[str, float]
    tests: pd.DataFrame  # the claims' family, Holm-adjusted together
    comparisons: pd.DataFrame  # every comparison at every length (descriptive)
    spearman: pd.DataFrame  # every mode and length (descriptive)
    cost: pd.DataFrame
    flops: float  # PGPS-Efficiency's median relative FLOPs at the longest length

    @property
    def longest(self) -> int:
        return self.lengths[-1]

    @property
    def shortest(self) -> int:
        return self.lengths[0]

    def test(self, key: str) -> dict[str, Any]:
        row = self.tests[self.tests["key"] == key] if len(self.tests) else self.tests
        return row.iloc[0].to_dict() if len(row) else {"n": 0, "pairs": 0, "p_value": math.nan, "p_holm": math.nan}


def _frequency_of_pairs(runs: pd.DataFrame, index: pd.Index) -> np.ndarray:
    freq = runs.drop_duplicates(["dataset", "seed"]).set_index(["dataset", "seed"])["smallest_class_frequency"]
    return freq.reindex(index).to_numpy(dtype=float)


def _correlation(runs: pd.DataFrame, mode: str, length: int) -> dict[str, float]:
    d = differences(runs, mode, "cps", length)
    return stats.spearman(_frequency_of_pairs(runs, d.index), d.to_numpy())


def analyse(runs: pd.DataFrame, params: dict[str, float]) -> Analysis:
    """The study's statistics from :func:`runs_table` rows and the decision thresholds (module docstring)."""
    alpha, margin = params["alpha"], params["noninferiority_margin"]
    lengths = sorted(int(n) for n in runs["length"].unique())
    seeds = sorted(int(s) for s in runs["seed"].unique())
    comparisons = pd.DataFrame(
        [
            {"a": a, "b": b, "length": n, **paired_test(differences(runs, a, b, n), alpha)}
            for n in lengths
            for a, b in COMPARISONS
        ]
    )
    spearman = pd.DataFrame([{"mode": m, "length": n, **_correlation(runs, m, n)} for m in PGPS_MODES for n in lengths])
    cost = pd.DataFrame(
        [
            {
                "mode": m, "length": n, "runs": int(((runs["mode"] == m) & (runs["length"] == n)).sum()),
                **{c: runs[(runs["mode"] == m) & (runs["length"] == n)][c].median()
                   for c in ("relative_flops", "relative_time", "virtual_runtime", "train_time_s")},
            }
            for m in STUDY_MODES
            for n in lengths
        ]
    )  # fmt: skip
    tests, flops = [], math.nan
    if lengths:
        longest, shortest = lengths[-1], lengths[0]
        relative = runs[(runs["mode"] == "efficiency") & (runs["length"] == longest)]["relative_flops"]
        flops = float(relative.median()) if relative.notna().any() else math.nan
        tests.append({"key": "1", "claim": 1, "what": f"PGPS-Perf − CPS at {longest}%",
                      **paired_test(differences(runs, "performance", "cps", longest), alpha)})  # fmt: skip
        eff = differences(runs, "efficiency", "cps", longest)
        tests.append({"key": "2", "claim": 2, "what": f"PGPS-Eff − CPS + {100 * margin:g} at {longest}% (> 0)",
                      **paired_test(eff, alpha, margin, "greater")})  # fmt: skip
        for mode in PGPS_MODES:
            short = differences(runs, mode, "cps", shortest)
            tests.append({"key": f"3a-{mode}", "claim": 3, "what": f"{SHORT[mode]} − CPS at {shortest}%",
                          **paired_test(short, alpha)})  # fmt: skip
            if len(lengths) > 1:
                trend = (short - differences(runs, mode, "cps", longest)).dropna()
                tests.append({"key": f"3b-{mode}", "claim": 3, "what": f"{SHORT[mode]}: difference at {shortest}% "
                              f"minus difference at {longest}%", **paired_test(trend, alpha)})  # fmt: skip
        r = _correlation(runs, "performance", longest)
        tests.append({"key": "4", "claim": 4, "what": f"Spearman ρ of PGPS-Perf − CPS at {longest}% with the "
                      "smallest-class frequency", "pairs": r["n"], "n": r["n"], "statistic": r["rho"],
                      "p_value": r["p_value"], "estimate": r["rho"], "lower": math.nan, "upper": math.nan,
                      "confidence": math.nan, "smallest_p": math.nan})  # fmt: skip
        tests.append({"key": "5", "claim": 5, "what": f"PGPS-Perf − PGPS-Eff at {longest}%",
                      **paired_test(differences(runs, "performance", "efficiency", longest), alpha)})  # fmt: skip
    tests = pd.DataFrame(tests)
    if len(tests):
        tests["p_holm"] = holm(tests["p_value"])
    return Analysis(runs, levels_of(runs), lengths, seeds, params, tests, comparisons, spearman, cost, flops)


# -- the verdicts ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: int
    title: str
    verdict: str
    evidence: str
    rule: str


CLAIMS = (
    "PGPS-Performance reaches a higher Dice than CPS at the same number of iterations",
    "PGPS-Efficiency is on par with CPS (non-inferior) with about a third of its FLOPs",
    "both PGPS modes converge faster, so their advantage is largest for short training",
    "the gain grows with class imbalance",
    "PGPS-Performance's larger batches add Dice beyond PGPS-Efficiency's small patches",
)
"""The claims the study tests: the article's four, and what tells its two modes apart."""


def _significant(result: dict[str, Any], alpha: float) -> int:
    """+1 / -1 for a Holm-significant positive / negative estimate, 0 otherwise."""
    p, estimate = result.get("p_holm", math.nan), result.get("estimate", math.nan)
    if not (isinstance(p, float) and p < alpha) or not estimate or math.isnan(estimate):
        return 0
    return 1 if estimate > 0 else -1


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.4f}"


def _points(v: float) -> str:
    """A Dice difference (fraction) in Dice points."""
    if math.isinf(v):
        return "+∞" if v > 0 else "−∞"
    return "–" if math.isnan(v) else f"{round(100 * v, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _test_text(r: dict[str, Any], alpha: float) -> str:
    """The estimate, interval, pairs and (Holm-adjusted) p of one test of the family."""
    if not r.get("pairs"):
        return "no pairs"
    text = (
        f"{_points(r['estimate'])} Dice points (Hodges-Lehmann), {100 * r['confidence']:.0f}% interval "
        f"[{_points(r['lower'])}, {_points(r['upper'])}], {int(r['pairs'])} pairs, p = {_fmt_p(r['p_value'])}, "
        f"Holm-adjusted p = {_fmt_p(r['p_holm'])}"
    )
    if r.get("smallest_p", 0) >= alpha:
        text += f" (with {int(r['n'])} non-zero pairs no p below {r['smallest_p']:.3f} is possible)"
    return text


def _total_iterations(analysis: Analysis, length: int) -> int | None:
    """The iterations of a run at ``length`` percent (epochs x iterations per epoch), None where no run shows them."""
    sel = analysis.runs[analysis.runs["length"] == length]
    total = (sel["epochs"] * sel["iterations_per_epoch"]).dropna()
    return int(total.iloc[0]) if len(total) else None


def _iterations(analysis: Analysis, length: int) -> str:
    total = _total_iterations(analysis, length)
    return f"{length}%" if total is None else f"{length}% ({total} iterations)"


def verdicts(analysis: Analysis) -> list[Verdict]:
    """The claims, each with its verdict, the numbers it rests on and its rule (module docstring)."""
    alpha, margin = analysis.params["alpha"], analysis.params["noninferiority_margin"]
    flops_max = analysis.params["flops_third_max"]
    if not analysis.lengths:
        return [Verdict(i, t, UNDECIDED, "no finished runs", "") for i, t in enumerate(CLAIMS, start=1)]
    longest, shortest = analysis.longest, analysis.shortest
    holm_note = f"Holm-adjusted p < {alpha:g} over the {len(analysis.tests)} tests of the claims"
    out = []

    r = analysis.test("1")
    sign = _significant(r, alpha)
    out.append(Verdict(
        1, CLAIMS[0], HOLDS if sign > 0 else FAILS if sign < 0 else UNDECIDED,
        f"PGPS-Performance − CPS at {_iterations(analysis, longest)}: {_test_text(r, alpha)}",
        f"two-sided Wilcoxon signed-rank test of the paired Dice differences at the longest length; holds if "
        f"{holm_note} with a positive estimate, fails if with a negative one",
    ))  # fmt: skip

    r = analysis.test("2")
    flops_ok = bool(analysis.flops <= flops_max) if math.isfinite(analysis.flops) else None
    noninferior = isinstance(r.get("p_holm"), float) and r["p_holm"] < alpha
    inferior = r.get("upper", math.nan) < -margin
    verdict = FAILS if flops_ok is False or inferior else HOLDS if flops_ok and noninferior else UNDECIDED
    out.append(Verdict(
        2, CLAIMS[1], verdict,
        f"PGPS-Efficiency used {100 * analysis.flops:.1f}% of CPS's FLOPs (median relative iterated voxels at "
        f"{longest}%); PGPS-Efficiency − CPS: {_test_text(r, alpha)} (one-sided test against the margin of "
        f"−{100 * margin:g} Dice points)",
        f"holds if the median relative FLOPs are at most {100 * flops_max:.0f}% and the one-sided signed-rank test "
        f"of difference + {100 * margin:g} points > 0 gives {holm_note} (non-inferiority: the lower end of the "
        f"{100 * (1 - 2 * alpha):.0f}% interval above −{100 * margin:g}); fails if the FLOPs exceed the bound or the "
        f"whole interval lies below −{100 * margin:g} points",
    ))  # fmt: skip

    parts, per_mode = [], {}
    for mode in PGPS_MODES:
        a, b = analysis.test(f"3a-{mode}"), analysis.test(f"3b-{mode}")
        sa, sb = _significant(a, alpha), _significant(b, alpha)
        per_mode[mode] = FAILS if -1 in (sa, sb) else HOLDS if sa > 0 and sb > 0 else UNDECIDED
        text = f"{SHORT[mode]} ({per_mode[mode]}): {SHORT[mode]} − CPS at {_iterations(analysis, shortest)}: "
        text += _test_text(a, alpha)
        if len(analysis.lengths) > 1:
            text += f"; difference at {shortest}% minus difference at {longest}%: {_test_text(b, alpha)}"
        parts.append(text)
    values = set(per_mode.values())
    out.append(Verdict(
        3, CLAIMS[2], FAILS if FAILS in values else HOLDS if values == {HOLDS} else UNDECIDED, ". ".join(parts),
        f"per mode: holds if the mode beats CPS at the shortest length and its difference to CPS is larger at the "
        f"shortest than at the longest length (two-sided signed-rank tests, both with {holm_note}), fails if either "
        "is significant the other way; the claim holds if it holds for both modes and fails if it fails for either",
    ))  # fmt: skip

    r = analysis.test("4")
    p, rho = r.get("p_holm", math.nan), r.get("estimate", math.nan)
    significant = isinstance(p, float) and p < alpha and math.isfinite(rho)
    out.append(Verdict(
        4, CLAIMS[3], HOLDS if significant and rho < 0 else FAILS if significant and rho > 0 else UNDECIDED,
        f"Spearman correlation of PGPS-Performance − CPS at {longest}% with the measured smallest-class frequency "
        f"of each pair's dataset: ρ = {rho:+.3f} over {int(r.get('pairs', 0))} pairs, p = {_fmt_p(r['p_value'])}, "
        f"Holm-adjusted p = {_fmt_p(p)}",
        f"holds if ρ < 0 with {holm_note}, fails if ρ > 0 with it, otherwise undecided",
    ))  # fmt: skip

    r = analysis.test("5")
    sign = _significant(r, alpha)
    out.append(Verdict(
        5, CLAIMS[4], HOLDS if sign > 0 else FAILS if sign < 0 else UNDECIDED,
        f"PGPS-Performance − PGPS-Efficiency at {_iterations(analysis, longest)}: {_test_text(r, alpha)}",
        f"two-sided Wilcoxon signed-rank test of the paired Dice differences at the longest length; holds if "
        f"{holm_note} with a positive estimate, fails if with a negative one (Efficiency's small patches alone "
        "do better)",
    ))  # fmt: skip
    return out


# -- tables ---------------------------------------------------------------------------------------------
def _hundred_percent(analysis: Analysis) -> str:
    """What 100% training length is: `` (100% = N iterations)``, or nothing where no run shows it."""
    total = _total_iterations(analysis, 100)
    return "" if total is None else f" (100% = {total} iterations)"


def _levels_rows(analysis: Analysis) -> list[tuple[str, str]]:
    shares = analysis.runs.groupby("dataset")["smallest_class_frequency"].mean()
    return [
        (d, f"{label(d)} (measured {100 * shares[d]:.3g}%)" if math.isfinite(shares[d]) else label(d))
        for d in analysis.levels
    ]


def dice_table(analysis: Analysis) -> Table:
    runs = analysis.runs
    columns = [Column(f"{m}|{n}", SHORT[m], f"{n}%") for m in STUDY_MODES for n in analysis.lengths]
    cells = []
    for level in analysis.levels:
        for m in STUDY_MODES:
            for n in analysis.lengths:
                sel = runs[(runs["dataset"] == level) & (runs["mode"] == m) & (runs["length"] == n)]
                v = 100 * sel["dice"].dropna()
                sd = v.std() if len(v) > 1 else math.nan
                cells.append(
                    cell(level, f"{m}|{n}", v.mean() if len(v) else math.nan, sd, n=len(v), runs=len(analysis.seeds))
                )
    return Table(
        name="study_dice",
        title="Synthetic study: held-out Dice [%] per level, strategy and training length (mean ± SD over replicates)",
        row_key="level", row_header="Foreground share", rows=_levels_rows(analysis), columns=columns,
        cells=pd.DataFrame(cells),
        notes=[
            f"Replicates (seeds) {', '.join(map(str, analysis.seeds))}: each its own dataset per level and its own "
            "training; the measured share is the mean over a level's datasets. Dice = nnU-Net's mean foreground "
            "Dice over the held-out cases."
        ],
    )  # fmt: skip


def differences_table(analysis: Analysis) -> Table:
    runs, longest = analysis.runs, analysis.longest if analysis.lengths else 100
    columns = [Column(f"{m}|{n}", f"{SHORT[m]} − CPS [points]", f"{n}%") for m in PGPS_MODES for n in analysis.lengths]
    columns += [Column(f"{m}|relative", "rel. gain [%]", f"{SHORT[m]}, {longest}%", digits=1) for m in PGPS_MODES]
    cells = []
    for level in analysis.levels:
        one = runs[runs["dataset"] == level]
        for m in PGPS_MODES:
            for n in analysis.lengths:
                d = 100 * differences(one, m, "cps", n)
                sd = d.std() if len(d) > 1 else math.nan
                cells.append(cell(level, f"{m}|{n}", d.mean() if len(d) else math.nan, sd, n=len(d)))
            mode = one[(one["mode"] == m) & (one["length"] == longest)]["dice"].mean()
            cps = one[(one["mode"] == "cps") & (one["length"] == longest)]["dice"].mean()
            relative = 100 * (mode / cps - 1) if cps > 0 else math.nan
            cells.append(cell(level, f"{m}|relative", relative, n=int(cps > 0)))
    return Table(
        name="study_differences",
        title="Synthetic study: paired Dice difference to CPS [Dice points] per level (mean ± SD over replicates)",
        row_key="level", row_header="Foreground share", rows=_levels_rows(analysis), columns=columns,
        cells=pd.DataFrame(cells),
        notes=[
            "Paired: each replicate's PGPS run minus its CPS run on the same dataset, seed and length. Rel. gain "
            "(secondary) = the level's mean Dice / mean CPS Dice - 1 at the longest length; '–' where CPS's mean is 0. "
            "Descriptive: the tests are in study_tests."
        ],
    )  # fmt: skip


def cost_table(analysis: Analysis) -> Table:
    rows = [(f"{m}|{n}", f"{SHORT[m]}, {n}%") for m in STUDY_MODES for n in analysis.lengths]
    columns = [
        Column("relative_flops", "", "rel. FLOPs [%]", digits=1),
        Column("relative_time", "", "rel. training time [%]", digits=1),
        Column("virtual_runtime", "", "virtual rel. runtime [%]", digits=1),
        Column("train_time_s", "", "training time [s]", digits=1),
    ]
    cells = []
    for r in analysis.cost.itertuples():
        key = f"{r.mode}|{int(r.length)}"
        for c in columns:
            value = getattr(r, c.key)
            cells.append(cell(key, c.key, value * (1 if c.key == "train_time_s" else 100), n=r.runs))
    return Table(
        name="study_cost", title="Synthetic study: FLOPs and runtime relative to CPS (median over (level, seed) pairs)",
        row_key="mode|length", row_header="Strategy, length", rows=rows, columns=columns, cells=pd.DataFrame(cells),
        notes=[
            "Rel. FLOPs = iterated voxels / CPS's (measured from the batches). Rel. training time = training time "
            "(validation excluded) / CPS's of the same pair, both measured on the same machine. Virtual rel. runtime = "
            "the article's Sec. 3.2.2 (training time / (mean P_max epoch time x epochs)). Times move with other load "
            "on the machine."
        ],
    )  # fmt: skip


_TEST_COLUMNS = [
    Column("pairs", "", "pairs", digits=0), Column("estimate", "", "estimate", digits=2),
    Column("lower", "", "lower", digits=2), Column("upper", "", "upper", digits=2),
    Column("p_value", "", "p", digits=4),
]  # fmt: skip


def _test_cells(key: str, r: dict[str, Any], columns: list[Column], scale: float = 100) -> list[dict]:
    out = []
    for c in columns:
        v = r.get(c.key, math.nan)
        v = scale * v if c.key in ("estimate", "lower", "upper") else v
        out.append(cell(key, c.key, v if math.isfinite(v) else math.nan, n=int(r.get("pairs", 0))))
    return out


def tests_table(analysis: Analysis) -> Table:
    columns = [*_TEST_COLUMNS, Column("p_holm", "", "p (Holm)", digits=4)]
    rows, cells = [], []
    for r in analysis.tests.to_dict("records"):
        rows.append((r["key"], f"{r['claim']}. {r['what']}"))
        cells += _test_cells(r["key"], r, columns, scale=1 if r["key"] == "4" else 100)
    return Table(
        name="study_tests",
        title="Synthetic study: the tests of the claims (one family, Holm-adjusted)",
        row_key="test", row_header="Claim, test", rows=rows, columns=columns, cells=pd.DataFrame(cells),
        notes=[
            f"Over (level, seed) pairs: each an independent dataset and training. Estimate and interval: "
            f"Hodges-Lehmann, in Dice points ({100 * (1 - analysis.params['alpha']):.0f}% for two-sided tests, "
            f"{100 * (1 - 2 * analysis.params['alpha']):.0f}% for claim 2's one-sided non-inferiority test); claim 4: "
            "Spearman's ρ (no interval). Wilcoxon signed-rank tests with exact null distributions, zero differences "
            "dropped. Holm's adjustment over every test of this table.",
        ],
    )  # fmt: skip


def comparisons_table(analysis: Analysis) -> Table:
    rows, cells = [], []
    for r in analysis.comparisons.to_dict("records"):
        key = f"{r['a']}-{r['b']}|{r['length']}"
        rows.append((key, f"{SHORT[r['a']]} − {SHORT[r['b']]}, {_iterations(analysis, r['length'])}"))
        cells += _test_cells(key, r, _TEST_COLUMNS)
    return Table(
        name="study_comparisons",
        title="Synthetic study: every paired comparison at every length (descriptive, unadjusted)",
        row_key="comparison|length", row_header="Comparison", rows=rows, columns=_TEST_COLUMNS,
        cells=pd.DataFrame(cells),
        notes=[
            f"Hodges-Lehmann estimate and {100 * (1 - analysis.params['alpha']):.0f}% interval of the paired Dice "
            "difference [Dice points] over (level, seed) pairs; two-sided Wilcoxon signed-rank p, not adjusted: the "
            "claims' tests and their adjustment are in study_tests.",
        ],
    )  # fmt: skip


def spearman_table(analysis: Analysis) -> Table:
    rows, cells = [], []
    columns = [Column("n", "", "pairs", digits=0), Column("rho", "", "ρ", digits=3),
               Column("p_value", "", "p", digits=4)]  # fmt: skip
    for r in analysis.spearman.to_dict("records"):
        key = f"{r['mode']}|{r['length']}"
        rows.append((key, f"{SHORT[r['mode']]} − CPS, {r['length']}%"))
        cells += [cell(key, c.key, r[c.key], n=r["n"]) for c in columns]
    return Table(
        name="study_spearman",
        title="Synthetic study: Spearman correlation of the paired Dice difference with the smallest-class frequency",
        row_key="mode|length", row_header="Difference, length", rows=rows, columns=columns, cells=pd.DataFrame(cells),
        notes=[
            "Over (level, seed) pairs; the frequency is each pair's dataset's measured voxel share of its class (pgps "
            "characteristics). Negative ρ: larger differences on rarer foreground. Unadjusted and descriptive; claim 4 "
            "tests PGPS-Perf at the longest length within the claims' family (study_tests).",
        ],
    )  # fmt: skip


def claims_table(found: list[Verdict]) -> Table:
    rows = [(str(v.claim), f"{v.claim}. {v.title}: {v.verdict}") for v in found]
    cells = [cell(str(v.claim), "verdict", {HOLDS: 1, FAILS: -1, UNDECIDED: 0}[v.verdict], n=1) for v in found]
    return Table(
        name="study_claims", title="Synthetic study: the claims (1 holds, 0 undecided, -1 fails)",
        row_key="claim", row_header="Claim", rows=rows, columns=[Column("verdict", "", "verdict", digits=0)],
        cells=pd.DataFrame(cells), notes=["The evidence and the rule of each verdict are in results.md."],
    )  # fmt: skip


# -- figures --------------------------------------------------------------------------------------------
DODGE = {"cps": 1 / 1.07, "efficiency": 1.0, "performance": 1.07}
"""Horizontal offsets (factors on the log length axis) that keep the strategies' error bars apart."""


def _length_axis(ax, analysis: Analysis) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(analysis.lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{n:g}" for n in analysis.lengths])
    if analysis.lengths:
        ax.set_xlim(min(analysis.lengths) / 1.35, max(analysis.lengths) * 1.35)


def convergence_figure(analysis: Analysis) -> Figure:
    """Figure 3 in the study's terms: held-out Dice over training length, one panel per level (each strategy's
    mean over replicates with ± SD bars, strategies set slightly apart), and a last panel with the paired
    difference of each PGPS mode to CPS over all pairs (Hodges-Lehmann estimate and interval)."""
    runs, alpha = analysis.runs, analysis.params["alpha"]
    panels = [*analysis.levels, "difference"]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(2.35 * ncols + 0.3, 2.25 * nrows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        labels_ = _levels_rows(analysis)
        for ax, panel in zip(axes, panels, strict=False):
            if panel == "difference":
                for mode in PGPS_MODES:
                    s = style.strategy(mode)
                    c = analysis.comparisons
                    sel = c[(c["a"] == mode) & (c["b"] == "cps")].sort_values("length") if len(c) else c
                    x = sel["length"].to_numpy(dtype=float) * DODGE[mode] if len(sel) else []
                    if len(sel):
                        est = 100 * sel["estimate"].to_numpy(dtype=float)
                        err = [est - 100 * sel["lower"].to_numpy(float), 100 * sel["upper"].to_numpy(float) - est]
                        ax.errorbar(x, est, yerr=np.nan_to_num(err, posinf=0, neginf=0), marker="o", markersize=3.5,
                                    capsize=2.5, color=s.color, linestyle=s.linestyle, linewidth=1.4)  # fmt: skip
                ax.axhline(0, color="0.3", linewidth=0.8)
                ax.set_title(f"all pairs: PGPS − CPS\n(Hodges-Lehmann, {100 * (1 - alpha):.0f}% interval)")
                ax.set_ylabel("Dice difference [points]")
            else:
                for mode in STUDY_MODES:
                    s = style.strategy(mode)
                    sel = runs[(runs["dataset"] == panel) & (runs["mode"] == mode)]
                    g = sel.groupby("length")["dice"].agg(["mean", "std"]).reindex(analysis.lengths) * 100
                    ax.errorbar(np.asarray(analysis.lengths, float) * DODGE[mode], g["mean"], yerr=g["std"].fillna(0),
                                marker="o", markersize=3, capsize=2, **s.line_kwargs())  # fmt: skip
                ax.set_title(f"foreground {dict(labels_)[panel]}".replace(" (measured", "\n(measured"))
                if list(axes).index(ax) % ncols == 0:
                    ax.set_ylabel("held-out Dice [%]")
            _length_axis(ax, analysis)
            ax.set_xlabel("training length [%]")
        handles = [matplotlib.lines.Line2D([], [], marker="o", markersize=3, **style.strategy(m).line_kwargs())
                   for m in STUDY_MODES]  # fmt: skip
        style.legend(fig, handles, [style.strategy(m).label for m in STUDY_MODES])
        fig.suptitle(f"Synthetic study: held-out Dice over training length{_hundred_percent(analysis)}; mean ± SD "
                     f"over {len(analysis.seeds)} replicates")  # fmt: skip
    return fig


def gain_figure(analysis: Analysis) -> Figure:
    """The paired Dice difference of each PGPS mode to CPS against the measured smallest-class frequency of the
    pair's dataset, one panel per length (the data of the Spearman table): every pair a dot, each level's mean a
    larger marker on a line; Spearman's ρ in the panel title."""
    runs = analysis.runs
    lengths = analysis.lengths or [100]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(2.45 * len(lengths) + 0.4, 3.0), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(lengths), squeeze=False, sharey=True)).ravel()
        for ax, length in zip(axes, lengths, strict=True):
            rhos = []
            for mode in PGPS_MODES:
                s = style.strategy(mode)
                d = 100 * differences(runs, mode, "cps", length)
                x = 100 * _frequency_of_pairs(runs, d.index)
                ax.plot(x, d.to_numpy(), linestyle="none", marker="o", markersize=2.5, color=s.color, alpha=0.45)
                means = pd.DataFrame({"x": x, "d": d.to_numpy(), "level": d.index.get_level_values(0)})
                means = means.groupby("level")[["x", "d"]].mean().sort_values("x")
                ax.plot(means["x"], means["d"], marker="D", markersize=4, **s.line_kwargs())
                r = analysis.spearman[(analysis.spearman["mode"] == mode) & (analysis.spearman["length"] == length)]
                if len(r) and math.isfinite(r["rho"].iloc[0]):
                    rhos.append(f"{SHORT[mode]} ρ = {r['rho'].iloc[0]:+.2f}")
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_title(f"{_iterations(analysis, length)}\n{'; '.join(rhos)}", fontsize=8)
            ax.set_xlabel("smallest-class frequency [%]")
        axes[0].set_ylabel("Dice difference to CPS [points]")
        handles = [matplotlib.lines.Line2D([], [], marker="D", markersize=4, **style.strategy(m).line_kwargs())
                   for m in PGPS_MODES]  # fmt: skip
        style.legend(fig, handles, [f"{style.strategy(m).label} (level mean; dots: pairs)" for m in PGPS_MODES])
        fig.suptitle("Synthetic study: paired difference to CPS vs class imbalance")
    return fig


# -- the paragraph ----------------------------------------------------------------------------------------
def scope(analysis: Analysis) -> str:
    """What the verdicts cover: the data, levels, replicates, lengths and the correction."""
    runs = analysis.runs
    complete = int((runs["status"] == "complete").sum()) if "status" in runs else len(runs)
    shares = runs.groupby("dataset")["smallest_class_frequency"].mean()
    measured = ", ".join(f"{100 * shares[d]:.3g}%" for d in analysis.levels if math.isfinite(shares[d]))
    lengths = ", ".join(_iterations(analysis, n) for n in analysis.lengths)
    pairs = int(runs.drop_duplicates(["dataset", "seed"]).shape[0])
    return (
        f"{complete} of {len(runs)} runs finished: {len(analysis.levels)} imbalance levels (mean measured foreground "
        f"{measured}) × {len(analysis.seeds)} replicates (each its own synthetic dataset and training seed) × "
        f"{len(STUDY_MODES)} strategies × {len(analysis.lengths)} training lengths ({lengths}), Dice on held-out "
        f"cases. Scope: synthetic single-lesion-class data and a light CPU network, so the verdicts below are about "
        f"this setup, not the article's datasets; each test pools the {pairs} (level, replicate) pairs over the "
        f"levels; the {len(analysis.tests)} tests of the claims are Holm-adjusted together at "
        f"α = {analysis.params['alpha']:g}; claim 2's non-inferiority margin, "
        f"{100 * analysis.params['noninferiority_margin']:g} Dice points, was set in the configuration before the run."
    )


def paragraph(analysis: Analysis, found: list[Verdict]) -> str:
    """The generated results text: the setup and scope, then one paragraph per claim."""
    lines = [scope(analysis), ""]
    for v in found:
        lines.append(f"**Claim {v.claim}: {v.title} — {v.verdict}.** {v.evidence}.")
        lines.append("")
    return "\n".join(lines)


def results_markdown(analysis: Analysis, found: list[Verdict]) -> str:
    rules = "\n".join(f"{v.claim}. {v.title}: {v.rule}." for v in found)
    return (
        "# What the synthetic study shows\n\n"
        "<!-- generated by pgps study-report from the collected runs; do not edit -->\n\n"
        + paragraph(analysis, found)
        + "\n## How the verdicts are decided\n\n"
        + "A pair is one (level, replicate) dataset at one length: a PGPS run and the CPS run of the same dataset, "
        + "seed and iterations; the outcome is their Dice difference in Dice points. Estimates and intervals: "
        + "Hodges-Lehmann, from the exact signed-rank distribution.\n\n"
        + rules
        + "\n"
    )


# -- rendering ------------------------------------------------------------------------------------------
def render_study(
    results_dir: str | Path, study_file: str | Path, out_dir: str | Path, log: Callable[[str], None] | None = None
) -> list[Path]:
    """Write :func:`pgps.experiments.study.study_outputs` into ``out_dir`` from a collected results folder and the
    study's configuration (``study.json``)."""
    say = log or (lambda _: None)
    study = json.loads(Path(study_file).read_text())
    from pgps.experiments.study import decision_parameters

    data = load_results(results_dir)
    runs = runs_table(data["results"], data["characteristics"], study.get("nnunet_dir"))
    analysis = analyse(runs, decision_parameters(study))
    found = verdicts(analysis)
    out = Path(out_dir)
    written = []
    tables = (dice_table(analysis), differences_table(analysis), cost_table(analysis), tests_table(analysis),
              comparisons_table(analysis), spearman_table(analysis), claims_table(found))  # fmt: skip
    for table in tables:
        for ext, text in (("csv", to_csv(table)), ("md", to_markdown(table)), ("tex", to_latex(table))):
            path = out / "tables" / f"{table.name}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
            written.append(path)
    for name, fig in (
        ("study_convergence", convergence_figure(analysis)),
        ("study_gain_vs_share", gain_figure(analysis)),
    ):
        paths = [out / "figures" / f"{name}.{ext}" for ext in ("png", "pdf")]
        style.save_figure(fig, *paths)
        written += paths
    path = out / RUNS_CSV
    atomic_write_text(path, runs.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    written.append(path)
    path = out / RESULTS_MD
    atomic_write_text(path, results_markdown(analysis, found))
    written.append(path)
    for v in found:
        say(f"claim {v.claim} ({v.title}): {v.verdict}")
    return written
