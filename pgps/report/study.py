"""The synthetic study's figures, tables, statistics and claim-by-claim verdicts (``pgps study-report``).

Input: the folder ``pgps collect`` wrote for the study's runs (``results.csv``; ``characteristics.csv``
with each level's measured class imbalance) and the study's configuration (``study.json``: the
workflow's ``study`` section, with the decision thresholds). Every number below is computed from
those files; the verdicts follow fixed rules, written here and into ``results.md``.

**Units of comparison.** A *pair* is one (level, seed) at one training length: the CPS run and a
PGPS run of the same dataset, seed and iterations. Relative Dice = Dice / CPS Dice of the pair
(the article's measure, :func:`pgps.report.stats.relative`), relative gain = relative Dice - 1.
Where CPS scored 0 and the PGPS run did not, the relative Dice is +infinity; where both scored
0 it is undefined and the pair is left out. The article's tests are rank tests (its Wilcoxon
signed-rank test on relative Dice, its Spearman correlation), so an infinite gain simply ranks
above every finite one: :func:`signed_rank_test` and :func:`rank_correlation` hand the ranks to
:func:`pgps.report.stats.wilcoxon_paired` and :func:`pgps.report.stats.spearman`, which gives
their exact results on finite data (``tests/test_study.py``) and a defined result with infinities.

**Decision rules** (``alpha``, ``equivalence_margin`` and ``flops_third_max`` from the config;
all tests two-sided, "significant" = p < alpha; the longest length stands for the article's full
training, the shortest for its short training):

1. *PGPS-Performance reaches a higher Dice than CPS at the same number of iterations.* Paired
   Wilcoxon test of Performance's against CPS's relative Dice over the pairs at the longest
   length. Holds: significant with a positive median difference. Fails: significant with a
   negative one. Otherwise undecided.
2. *PGPS-Efficiency matches CPS with about a third of the FLOPs.* FLOPs: the median relative FLOPs
   (iterated voxels / CPS's, measured) at most ``flops_third_max``. Match: equivalence within
   +-``equivalence_margin`` of relative Dice, by the two one-sided tests at ``alpha``, i.e. the
   ``1 - 2*alpha`` Hodges-Lehmann confidence interval of the median relative-Dice difference
   (from the signed-rank distribution, :func:`hodges_lehmann`) inside the margin. Holds: FLOPs
   within the bound and the interval inside the margin. Fails: FLOPs above the bound, or the
   interval wholly outside the margin. Otherwise undecided. (The article read a non-significant
   Wilcoxon test as "comparable"; absence of a difference is not shown that way, hence the margin.)
3. *Both PGPS modes converge faster, so the advantage is largest for short training.* Per mode:
   (a) Wilcoxon test of the mode against CPS at the shortest length; (b) Wilcoxon test of the
   pair's relative gain at the shortest length against the same (level, seed)'s gain at the
   longest. Holds for the mode: (a) and (b) significant and positive. Fails: (a) or (b)
   significant and negative. Otherwise undecided. The claim holds if it holds for both modes and
   fails if it fails for either. (The article itself reports that PGPS-Efficiency converges more
   slowly than CPS per iteration, Section 4.1.4.)
4. *The gain grows with class imbalance* (Section 4.2: PGPS-Performance's relative gain
   correlates negatively with the smallest-class frequency). Spearman correlation of
   Performance's relative gain with the level's measured smallest-class frequency over the pairs,
   per length; p-values Holm-adjusted over the lengths. Holds: some length significant with
   rho < 0 and none with rho > 0. Fails: some length significant with rho > 0 and none with
   rho < 0. Otherwise undecided. PGPS-Efficiency's correlations are reported beside it (the
   article found them positive).

"Undecided" states what the data cannot tell at this sample size; the report adds the smallest
p-value the number of pairs allows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator
from scipy.stats import rankdata

from pgps.experiments.study import RESULTS_MD, RUNS_CSV, STUDY_MODES, level_label
from pgps.io import atomic_write_text
from pgps.report import stats, style
from pgps.report.results import compare_to_cps, load_results
from pgps.report.table import Column, Table, cell, to_csv, to_latex, to_markdown

PGPS_MODES: tuple[str, ...] = ("efficiency", "performance")
SHORT = {"cps": "CPS", "efficiency": "PGPS-Eff", "performance": "PGPS-Perf"}
HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


# -- the data ----------------------------------------------------------------------------------------
def runs_table(results: pd.DataFrame, characteristics: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its level's measured shares and the measures against the pair's CPS run:
    ``relative_dice`` (+inf where CPS scored 0 and this run did not, NaN where both did), ``gain``,
    ``relative_flops`` (iterated voxels), ``relative_time`` (training time / CPS's, both measured on
    this machine) and ``virtual_runtime`` (the article's virtual relative runtime, Sec. 3.2.2)."""
    df = compare_to_cps(results)
    cps = df["cps_dice"]
    relative = np.where(cps > 0, df["dice"] / cps.where(cps > 0), np.where(df["dice"] > 0, np.inf, np.nan))
    relative = np.where(df["dice"].isna() | cps.isna(), np.nan, relative)
    relative = np.where((df["mode"] == "cps") & df["dice"].notna(), 1.0, relative)  # CPS against itself, also at 0
    df["relative_dice"] = relative
    df["gain"] = df["relative_dice"] - 1
    key = ["dataset", "length", "seed"]
    cps_time = df[df["mode"] == "cps"].set_index(key)["train_time_s"]
    df["relative_time"] = df["train_time_s"].to_numpy() / cps_time.reindex(pd.MultiIndex.from_frame(df[key])).to_numpy()
    df["virtual_runtime"] = df["relative_runtime"]
    chars = characteristics.set_index("dataset") if len(characteristics) else pd.DataFrame()
    for column in ("smallest_class_frequency", "foreground_frequency"):
        df[column] = [
            float(chars.at[d, column]) if d in chars.index and column in chars else math.nan for d in df["dataset"]
        ]
    columns = [
        "dataset", "mode", "length", "seed", "status", "dice", "cps_dice", "relative_dice", "gain", "iterated_voxels",
        "relative_flops", "train_time_s", "relative_time", "virtual_runtime", "epochs", "iterations_per_epoch",
        "smallest_class_frequency", "foreground_frequency", "fold_dir",
    ]  # fmt: skip
    order = {m: i for i, m in enumerate(STUDY_MODES)}
    df = df.assign(_mode=df["mode"].map(order), _share=-df["smallest_class_frequency"].fillna(0))
    return df.sort_values(["_share", "dataset", "length", "seed", "_mode"])[columns].reset_index(drop=True)


def levels_of(runs: pd.DataFrame) -> list[str]:
    """The levels (datasets) from the most balanced to the rarest foreground (measured)."""
    shares = runs.groupby("dataset", sort=False)["smallest_class_frequency"].first()
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


def _paired(runs: pd.DataFrame, mode: str, length: int, column: str = "relative_dice") -> pd.Series:
    sel = runs[(runs["mode"] == mode) & (runs["length"] == length)]
    return sel.set_index(["dataset", "seed"])[column]


# -- statistics with infinite gains -----------------------------------------------------------------------
def signed_rank_test(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """:func:`pgps.report.stats.wilcoxon_paired` of ``x`` against ``y`` where differences may be infinite.

    The signed-rank statistic depends only on the signs and ranks of the non-zero differences, so the
    test runs on those signed ranks (identical result on finite data); an infinite difference ranks
    above every finite one. Pairs with a NaN are left out. ``median_difference`` is the median of the
    raw differences (may be infinite); ``infinite`` counts the infinite differences.
    """
    with np.errstate(invalid="ignore"):  # inf - inf: undefined, left out
        d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[~np.isnan(d)]
    median = float(np.median(d)) if d.size else math.nan
    nonzero = d[np.abs(d) > 1e-12]
    ranks = np.sign(nonzero) * rankdata(np.abs(nonzero)) if nonzero.size else nonzero
    result = stats.wilcoxon_paired(ranks, np.zeros_like(ranks))
    return {**result, "median_difference": median, "infinite": int(np.isinf(d).sum()), "pairs": int(d.size)}


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
    NaNs are left out; infinite differences stay infinite."""
    v = np.asarray([x for x in d if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore"):
        i, j = np.triu_indices(v.size)
        walsh = np.sort((v[i] + v[j]) / 2)
    walsh = walsh[~np.isnan(walsh)]  # +inf + -inf: no average
    tail = np.cumsum(signed_rank_null(v.size))
    t = int(np.searchsorted(tail, (1 - confidence) / 2, side="right")) - 1  # P(T+ <= t) <= (1 - conf) / 2
    lower = float(walsh[t]) if t >= 0 and t < walsh.size else -math.inf
    upper = float(walsh[walsh.size - 1 - t]) if t >= 0 and walsh.size - 1 - t >= 0 else math.inf
    return float(np.median(walsh)) if walsh.size else math.nan, lower, upper


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value an exact signed-rank test of ``n`` non-zero pairs can give."""
    return min(1.0, 2 / 2.0**n) if n > 0 else 1.0


def rank_correlation(x: Sequence[float], gains: Sequence[float]) -> dict[str, float]:
    """:func:`pgps.report.stats.spearman` of ``x`` with ``gains`` that may be +-infinite: Spearman's rho only
    uses ranks, so the gains are handed over as their ranks (identical result on finite data)."""
    a, g = np.asarray(x, dtype=float), np.asarray(gains, dtype=float)
    keep = ~np.isnan(a) & ~np.isnan(g)
    return stats.spearman(a[keep], rankdata(g[keep]) if keep.any() else g[keep])


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


# -- the analyses ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Analysis:
    """Everything the tables, figures and verdicts are made of."""

    runs: pd.DataFrame
    levels: list[str]
    lengths: list[int]
    seeds: list[int]
    params: dict[str, float]
    wilcoxon: pd.DataFrame
    spearman: pd.DataFrame
    cost: pd.DataFrame
    equivalence: dict[str, float]
    trend: dict[str, dict[str, float]]


COMPARISONS = (("performance", "cps"), ("efficiency", "cps"), ("performance", "efficiency"))


def analyse(runs: pd.DataFrame, params: dict[str, float]) -> Analysis:
    """The study's statistics from :func:`runs_table` rows and the decision thresholds."""
    lengths = sorted(int(n) for n in runs["length"].unique())
    rows = []
    for length in lengths:
        for a, b in COMPARISONS:
            x, y = _paired(runs, a, length), _paired(runs, b, length)
            both = pd.concat([x.rename("x"), y.rename("y")], axis=1).dropna()
            r = signed_rank_test(both["x"], both["y"])
            rows.append({"a": a, "b": b, "length": length, **r, "smallest_p": smallest_p(r["n"])})
    wilcoxon = pd.DataFrame(rows)

    rows = []
    for mode in PGPS_MODES:
        for length in lengths:
            sel = runs[(runs["mode"] == mode) & (runs["length"] == length)]
            r = rank_correlation(sel["smallest_class_frequency"], sel["gain"])
            rows.append({"mode": mode, "length": length, **r})
    spearman = pd.DataFrame(rows)
    if len(spearman):
        spearman["p_holm"] = np.nan
        for mode in PGPS_MODES:
            mask = spearman["mode"] == mode
            spearman.loc[mask, "p_holm"] = holm(spearman.loc[mask, "p_value"])

    rows = []
    for mode in STUDY_MODES:
        for length in lengths:
            sel = runs[(runs["mode"] == mode) & (runs["length"] == length)]
            rows.append(
                {
                    "mode": mode, "length": length, "runs": len(sel), "relative_flops": sel["relative_flops"].median(),
                    "relative_time": sel["relative_time"].median(), "virtual_runtime": sel["virtual_runtime"].median(),
                    "train_time_s": sel["train_time_s"].median(),
                }
            )  # fmt: skip
    cost = pd.DataFrame(rows)

    equivalence, trend = {}, {}
    if lengths:
        longest, shortest = lengths[-1], lengths[0]
        x, y = _paired(runs, "efficiency", longest), _paired(runs, "cps", longest)
        d = (x - y.reindex(x.index)).dropna()
        estimate, lower, upper = hodges_lehmann(d.to_numpy(), 1 - 2 * params["alpha"])
        eff_flops = runs[(runs["mode"] == "efficiency") & (runs["length"] == longest)]["relative_flops"].median()
        equivalence = {"estimate": estimate, "lower": lower, "upper": upper, "n": int(d.size), "flops": eff_flops}
        for mode in PGPS_MODES:
            short, long = _paired(runs, mode, shortest, "gain"), _paired(runs, mode, longest, "gain")
            both = pd.concat([short.rename("short"), long.rename("long")], axis=1).dropna()
            trend[mode] = signed_rank_test(both["short"], both["long"]) if len(lengths) > 1 else {}
    seeds = sorted(int(s) for s in runs["seed"].unique())
    return Analysis(runs, levels_of(runs), lengths, seeds, params, wilcoxon, spearman, cost, equivalence, trend)


def _test(analysis: Analysis, a: str, b: str, length: int) -> dict[str, Any]:
    w = analysis.wilcoxon
    row = w[(w["a"] == a) & (w["b"] == b) & (w["length"] == length)]
    return row.iloc[0].to_dict() if len(row) else {"n": 0, "p_value": math.nan, "median_difference": math.nan}


def _significant(result: dict[str, Any], alpha: float) -> int:
    """+1 / -1 for a significant positive / negative median difference, 0 otherwise."""
    p, median = result.get("p_value", math.nan), result.get("median_difference", math.nan)
    if not (isinstance(p, float) and p < alpha) or not median or math.isnan(median):
        return 0
    return 1 if median > 0 else -1


# -- the verdicts ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: int
    title: str
    verdict: str
    evidence: str
    rule: str


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = –"
    return f"p = {p:.2g}" if p < 0.001 else f"p = {p:.4f}"


def _fmt_rel(v: float) -> str:
    if math.isinf(v):
        return "+∞" if v > 0 else "−∞"
    return "–" if math.isnan(v) else f"{100 * v:+.2f}%"


def _test_text(result: dict[str, Any], what: str) -> str:
    n = int(result.get("n", 0))
    pairs = int(result.get("pairs", n))
    text = f"{what}: median {_fmt_rel(result['median_difference'])} over {pairs} pairs, {_fmt_p(result['p_value'])}"
    if result.get("infinite"):
        text += f" ({int(result['infinite'])} with CPS at Dice 0, an infinite relative gain)"
    if n and smallest_p(n) >= 0.05:
        text += f"; with {n} non-zero pairs no p below {smallest_p(n):.3f} is possible"
    return text


def _iterations(analysis: Analysis, length: int) -> str:
    sel = analysis.runs[analysis.runs["length"] == length]
    total = (sel["epochs"] * sel["iterations_per_epoch"]).dropna()
    return f"{length}% ({int(total.iloc[0])} iterations)" if len(total) else f"{length}%"


def verdicts(analysis: Analysis) -> list[Verdict]:
    """The four claims, each with its verdict, the numbers it rests on and its rule (module docstring)."""
    alpha, margin = analysis.params["alpha"], analysis.params["equivalence_margin"]
    flops_max = analysis.params["flops_third_max"]
    if not analysis.lengths:
        return [Verdict(i, t, UNDECIDED, "no finished runs", "") for i, t in enumerate(CLAIMS, start=1)]
    longest, shortest = analysis.lengths[-1], analysis.lengths[0]
    out = []

    r = _test(analysis, "performance", "cps", longest)
    sign = _significant(r, alpha)
    out.append(
        Verdict(
            1, CLAIMS[0], HOLDS if sign > 0 else FAILS if sign < 0 else UNDECIDED,
            _test_text(r, f"PGPS-Performance vs CPS relative Dice at {_iterations(analysis, longest)}"),
            f"paired two-sided Wilcoxon signed-rank test over (level, seed) pairs at the longest length; holds if p < "
            f"{alpha:g} with a positive median difference, fails if p < {alpha:g} with a negative one",
        )
    )  # fmt: skip

    e = analysis.equivalence
    flops_ok = bool(e["flops"] <= flops_max) if math.isfinite(e["flops"]) else None
    inside = -margin < e["lower"] and e["upper"] < margin
    outside = e["upper"] < -margin or e["lower"] > margin
    verdict = FAILS if flops_ok is False or outside else HOLDS if flops_ok and inside else UNDECIDED
    out.append(
        Verdict(
            2, CLAIMS[1], verdict,
            f"PGPS-Efficiency used {100 * e['flops']:.1f}% of CPS's FLOPs (median relative iterated voxels at "
            f"{longest}%); its relative Dice minus CPS's: Hodges-Lehmann median {_fmt_rel(e['estimate'])}, "
            f"{100 * (1 - 2 * alpha):.0f}% confidence interval [{_fmt_rel(e['lower'])}, {_fmt_rel(e['upper'])}] "
            f"over {e['n']} pairs",
            f"holds if the median relative FLOPs are at most {100 * flops_max:.0f}% and the "
            f"{100 * (1 - 2 * alpha):.0f}% "
            f"interval lies inside ±{100 * margin:g}% (equivalence by two one-sided tests at {alpha:g}); fails if the "
            f"FLOPs exceed the bound or the interval lies wholly outside ±{100 * margin:g}%",
        )
    )  # fmt: skip

    parts, per_mode = [], {}
    for mode in PGPS_MODES:
        short = _test(analysis, mode, "cps", shortest)
        trend = analysis.trend.get(mode, {})
        a, b = _significant(short, alpha), _significant(trend, alpha) if trend else 0
        per_mode[mode] = FAILS if -1 in (a, b) else HOLDS if a > 0 and b > 0 else UNDECIDED
        parts.append(
            f"{SHORT[mode]} ({per_mode[mode]}): "
            + _test_text(short, f"vs CPS at {_iterations(analysis, shortest)}")
            + ("; " + _test_text(trend, f"gain at {shortest}% minus gain at {longest}%") if trend else "")
        )
    values = set(per_mode.values())
    verdict = FAILS if FAILS in values else HOLDS if values == {HOLDS} else UNDECIDED
    out.append(
        Verdict(
            3, CLAIMS[2], verdict, ". ".join(parts),
            f"per mode: holds if the mode beats CPS at the shortest length and its relative gain is larger at the "
            f"shortest than at the longest length (both p < {alpha:g}), fails if either is significant the other "
            "way; the claim holds if it holds for both modes and fails if it fails for either",
        )
    )  # fmt: skip

    sp = analysis.spearman
    perf = sp[sp["mode"] == "performance"] if len(sp) else sp
    negative = [(int(r.length), r.rho, r.p_holm) for r in perf.itertuples() if r.p_holm < alpha and r.rho < 0]
    positive = [(int(r.length), r.rho, r.p_holm) for r in perf.itertuples() if r.p_holm < alpha and r.rho > 0]
    verdict = HOLDS if negative and not positive else FAILS if positive and not negative else UNDECIDED
    listing = "; ".join(
        f"{int(r.length)}%: ρ = {r.rho:+.3f}, Holm-adjusted {_fmt_p(r.p_holm)} (n = {int(r.n)})"
        for r in perf.itertuples()
    )
    out.append(
        Verdict(
            4, CLAIMS[3], verdict,
            f"Spearman correlation of PGPS-Performance's relative gain with the measured smallest-class frequency "
            f"over (level, seed) pairs, per length: {listing}",
            f"holds if some length has rho < 0 with Holm-adjusted p < {alpha:g} and none has rho > 0, fails if the "
            "reverse, otherwise undecided",
        )
    )  # fmt: skip
    return out


CLAIMS = (
    "PGPS-Performance reaches a higher Dice than CPS at the same number of iterations",
    "PGPS-Efficiency matches CPS's Dice with about a third of its FLOPs",
    "both PGPS modes converge faster, so their advantage is largest for short training",
    "the gain grows with class imbalance",
)
"""The article's four claims, as the study tests them."""


# -- tables ---------------------------------------------------------------------------------------------
def _levels_rows(analysis: Analysis) -> list[tuple[str, str]]:
    runs = analysis.runs.groupby("dataset")["smallest_class_frequency"].first()
    return [
        (d, f"{label(d)} (measured {100 * runs[d]:.3g}%)" if math.isfinite(runs[d]) else label(d))
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
        title="Synthetic study: held-out Dice [%] per level, strategy and training length (mean ± SD over seeds)",
        row_key="level", row_header="Foreground share", rows=_levels_rows(analysis), columns=columns,
        cells=pd.DataFrame(cells),
        notes=[
            f"Seeds {', '.join(map(str, analysis.seeds))}; Dice = nnU-Net's mean foreground Dice over the held-out "
            "cases."
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


def wilcoxon_table(analysis: Analysis) -> Table:
    rows, cells = [], []
    columns = [
        Column("pairs", "", "pairs", digits=0), Column("n", "", "non-zero", digits=0),
        Column("infinite", "", "CPS at 0", digits=0), Column("statistic", "", "W", digits=1),
        Column("p_value", "", "p", digits=4), Column("median_difference", "", "median diff. [%]", digits=2),
    ]  # fmt: skip
    for r in analysis.wilcoxon.to_dict("records"):
        key = f"{r['a']}-{r['b']}|{r['length']}"
        rows.append((key, f"{SHORT[r['a']]} vs {SHORT[r['b']]}, {r['length']}%"))
        for c in columns:
            v = r.get(c.key, math.nan)
            v = 100 * v if c.key == "median_difference" and math.isfinite(v) else v
            cells.append(cell(key, c.key, v if math.isfinite(v) else math.nan, n=r["n"]))
    return Table(
        name="study_wilcoxon",
        title="Synthetic study: paired two-sided Wilcoxon signed-rank tests over (level, seed) pairs (relative Dice)",
        row_key="comparison|length", row_header="Comparison", rows=rows, columns=columns, cells=pd.DataFrame(cells),
        notes=[
            "Relative Dice = Dice / CPS Dice of the same level, seed and length (the article's pairing, here over "
            "(level, seed) instead of datasets); exact null distribution; zero differences dropped. A pair where CPS "
            "scored 0 and the other did not has an infinite difference (ranked above all others; its median "
            "difference may then be +∞, shown as a gap).",
        ],
    )  # fmt: skip


def spearman_table(analysis: Analysis) -> Table:
    rows, cells = [], []
    columns = [Column("n", "", "pairs", digits=0), Column("rho", "", "ρ", digits=3),
               Column("p_value", "", "p", digits=4), Column("p_holm", "", "p (Holm)", digits=4)]  # fmt: skip
    for r in analysis.spearman.to_dict("records"):
        key = f"{r['mode']}|{r['length']}"
        rows.append((key, f"{SHORT[r['mode']]}, {r['length']}%"))
        cells += [cell(key, c.key, r[c.key], n=r["n"]) for c in columns]
    return Table(
        name="study_spearman",
        title="Synthetic study: Spearman correlation of the relative Dice gain with the smallest-class frequency",
        row_key="mode|length", row_header="Strategy, length", rows=rows, columns=columns, cells=pd.DataFrame(cells),
        notes=[
            "Over (level, seed) pairs; the frequency is each level's measured voxel share of its class (pgps "
            "characteristics). Negative ρ: larger gains on rarer foreground. Holm's adjustment over the lengths of a "
            "strategy. Infinite gains (CPS at Dice 0) rank above all others.",
        ],
    )  # fmt: skip


def claims_table(found: list[Verdict]) -> Table:
    rows = [(str(v.claim), f"{v.claim}. {v.title}: {v.verdict}") for v in found]
    cells = [cell(str(v.claim), "verdict", {HOLDS: 1, FAILS: -1, UNDECIDED: 0}[v.verdict], n=1) for v in found]
    return Table(
        name="study_claims", title="Synthetic study: the article's claims (1 holds, 0 undecided, -1 fails)",
        row_key="claim", row_header="Claim", rows=rows, columns=[Column("verdict", "", "verdict", digits=0)],
        cells=pd.DataFrame(cells), notes=["The evidence and the rule of each verdict are in results.md."],
    )  # fmt: skip


# -- figures --------------------------------------------------------------------------------------------
def _length_axis(ax, analysis: Analysis) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(analysis.lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{n:g}" for n in analysis.lengths])


def convergence_figure(analysis: Analysis) -> Figure:
    """Figure 3 in the study's terms: held-out Dice over training length per level, each strategy's mean
    over seeds with every seed as a dot and the min-max band; last panel: the average over levels
    after normalizing each level by its best mean Dice."""
    runs = analysis.runs
    panels = [*analysis.levels, "norm_avg"]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(1.95 * len(panels) + 0.6, 2.9), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
        means = runs.groupby(["dataset", "mode", "length"])["dice"].mean()
        best = {d: means.loc[d].max() for d in analysis.levels if d in means.index.get_level_values(0)}
        for ax, panel in zip(axes, panels, strict=True):
            for mode in STUDY_MODES:
                s = style.strategy(mode)
                kwargs = s.line_kwargs()
                if panel == "norm_avg":
                    points = []
                    for n in analysis.lengths:
                        v = [100 * means[(d, mode, n)] / best[d] for d in best if (d, mode, n) in means and best[d] > 0]
                        points.append((n, float(np.mean(v)) if v else math.nan))
                    xs, ys = zip(*points, strict=True) if points else ((), ())
                    ax.plot(xs, ys, marker="o", markersize=3, **kwargs)
                    continue
                sel = runs[(runs["dataset"] == panel) & (runs["mode"] == mode)]
                g = sel.groupby("length")["dice"].agg(["mean", "min", "max"]).reindex(analysis.lengths) * 100
                ax.fill_between(g.index, g["min"], g["max"], color=s.color, alpha=0.15, linewidth=0)
                ax.plot(g.index, g["mean"], marker="o", markersize=3, **kwargs)
                ax.plot(sel["length"], 100 * sel["dice"], linestyle="none", marker=".", markersize=3, color=s.color,
                        alpha=0.8, zorder=s.zorder)  # fmt: skip
            _length_axis(ax, analysis)
            ax.set_title("Normalized average [% of best]" if panel == "norm_avg" else f"foreground {label(panel)}")
            ax.set_xlabel("training length [%]")
        axes[0].set_ylabel("held-out Dice [%]")
        handles, labels_ = axes[0].get_legend_handles_labels()
        fig.legend(handles[: len(STUDY_MODES)], labels_[: len(STUDY_MODES)], loc="outside lower center",
                   ncol=len(STUDY_MODES), frameon=False)  # fmt: skip
        iterations = ", ".join(_iterations(analysis, n) for n in analysis.lengths)
        fig.suptitle(f"Synthetic study: convergence over training length ({iterations}); "
                     f"{len(analysis.seeds)} seeds, band = min-max")  # fmt: skip
    return fig


def gain_figure(analysis: Analysis) -> Figure:
    """Relative Dice gain of each PGPS mode against the level's measured smallest-class frequency, one panel
    per length (the data of the Spearman table); infinite gains are drawn at the top edge as triangles."""
    runs = analysis.runs
    lengths = analysis.lengths or [100]
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=(2.3 * len(lengths) + 0.6, 2.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(lengths), squeeze=False, sharey=True)).ravel()
        finite = runs["gain"][np.isfinite(runs["gain"])]
        top = 100 * float(finite.max()) * 1.15 if len(finite) and finite.max() > 0 else 10.0
        for ax, length in zip(axes, lengths, strict=True):
            for mode in PGPS_MODES:
                s = style.strategy(mode)
                sel = runs[(runs["mode"] == mode) & (runs["length"] == length)]
                x, g = 100 * sel["smallest_class_frequency"], 100 * sel["gain"]
                ax.plot(x[np.isfinite(g)], g[np.isfinite(g)], linestyle="none", marker="o", markersize=3.5,
                        color=s.color, label=s.label, alpha=0.85)  # fmt: skip
                inf = np.isinf(g) & (g > 0)
                ax.plot(x[inf], np.full(int(inf.sum()), top), linestyle="none", marker="^", markersize=5, color=s.color)
                r = analysis.spearman[(analysis.spearman["mode"] == mode) & (analysis.spearman["length"] == length)]
                if len(r) and math.isfinite(r["rho"].iloc[0]):
                    ax.text(0.02, 0.97 - 0.09 * PGPS_MODES.index(mode), f"{SHORT[mode]} ρ={r['rho'].iloc[0]:+.2f}",
                            transform=ax.transAxes, fontsize=7, va="top", color=s.color)  # fmt: skip
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_title(f"{_iterations(analysis, length)}")
            ax.set_xlabel("smallest-class frequency [%]")
        axes[0].set_ylabel("relative Dice gain over CPS [%]")
        axes[0].legend(loc="lower left", frameon=False)
        fig.suptitle("Synthetic study: gain over CPS vs class imbalance (▲: CPS at Dice 0, infinite gain)")
    return fig


# -- the paragraph ----------------------------------------------------------------------------------------
def paragraph(analysis: Analysis, found: list[Verdict]) -> str:
    """The generated results text: the setup in one sentence, then one paragraph per claim."""
    runs = analysis.runs
    complete = int((runs["status"] == "complete").sum()) if "status" in runs else len(runs)
    shares = runs.groupby("dataset")["smallest_class_frequency"].first()
    measured = ", ".join(f"{100 * shares[d]:.3g}%" for d in analysis.levels if math.isfinite(shares[d]))
    lengths = ", ".join(_iterations(analysis, n) for n in analysis.lengths)
    lines = [
        f"{complete} of {len(runs)} runs finished: {len(analysis.levels)} imbalance levels (measured foreground "
        f"{measured}) × {len(STUDY_MODES)} strategies × {len(analysis.lengths)} training lengths ({lengths}) × "
        f"{len(analysis.seeds)} seeds, Dice on held-out cases.",
        "",
    ]
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
        + f"All tests two-sided at α = {analysis.params['alpha']:g}; a pair is one (level, seed) at one length. "
        + "Relative Dice = Dice / CPS Dice of the pair.\n\n"
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
    runs = runs_table(data["results"], data["characteristics"])
    analysis = analyse(runs, decision_parameters(study))
    found = verdicts(analysis)
    out = Path(out_dir)
    written = []
    for table in (dice_table(analysis), cost_table(analysis), wilcoxon_table(analysis), spearman_table(analysis),
                  claims_table(found)):  # fmt: skip
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
