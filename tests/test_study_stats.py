"""The synthetic study's statistics and verdicts (``pgps.report.study``) and its grid (``pgps.experiments.study``), on
constructed data: rank tests with infinite gains, the Hodges-Lehmann interval as the inverted signed-rank
test, Holm's adjustment, the decision rules, and a render of every output. No training here; the
miniature study that trains is ``tests/test_study.py``."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pgps.data import synth
from pgps.experiments import study
from pgps.report import stats
from pgps.report import study as rs

RNG = np.random.default_rng(20261202)


# -- rank statistics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [5, 9, 14])
def test_signed_rank_test_equals_the_article_test_on_finite_data(n):
    x, y = RNG.normal(1.0, 0.1, n), RNG.normal(1.02, 0.1, n)
    ours, article = rs.signed_rank_test(x, y), stats.wilcoxon_paired(x, y)
    assert ours["p_value"] == pytest.approx(article["p_value"], rel=1e-12)
    assert ours["statistic"] == pytest.approx(article["statistic"])
    assert ours["n"] == article["n"] and ours["median_difference"] == pytest.approx(article["median_difference"])


def test_an_infinite_gain_ranks_above_every_finite_one():
    finite = np.array([0.30, 0.20, -0.05, 0.10, 0.25, 0.15, 0.40])
    with_inf = finite.copy()
    with_inf[np.argmax(finite)] = np.inf  # the largest difference becomes infinite: same ranks, same test
    a, b = rs.signed_rank_test(finite, np.zeros(7)), rs.signed_rank_test(with_inf, np.zeros(7))
    assert a["p_value"] == b["p_value"] and b["infinite"] == 1 and a["infinite"] == 0
    flipped = with_inf.copy()
    flipped[np.argmax(finite)] = -np.inf  # now the largest rank is negative: a different (larger) p
    assert rs.signed_rank_test(flipped, np.zeros(7))["p_value"] > b["p_value"]


def test_signed_rank_null_gives_scipys_exact_p_values():
    for n in (6, 11):
        d = RNG.normal(0.3, 1.0, n)
        t_plus = sum(r for r, v in zip(scipy_stats.rankdata(np.abs(d)), d, strict=True) if v > 0)
        t = int(min(t_plus, n * (n + 1) / 2 - t_plus))
        p = 2 * rs.signed_rank_null(n)[: t + 1].sum()
        assert min(1.0, p) == pytest.approx(scipy_stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)
        assert rs.signed_rank_null(n).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_hodges_lehmann_interval_is_the_inverted_signed_rank_test(confidence):
    """Just inside an end of the interval the exact two-sided test of d - mu keeps mu (p > 1 - confidence),
    just outside it rejects mu (p <= 1 - confidence): the interval is the set of shifts the test accepts."""
    d = RNG.normal(0.05, 0.1, 12)
    estimate, lower, upper = rs.hodges_lehmann(d, confidence)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(12) for j in range(i, 12))
    assert estimate == pytest.approx(np.median(walsh)) and lower < estimate < upper
    eps = 1e-9

    def p(mu):
        return scipy_stats.wilcoxon(d - mu, method="exact").pvalue

    gamma = 1 - confidence
    assert p(lower + eps) > gamma and p(upper - eps) > gamma
    assert p(lower - eps) <= gamma and p(upper + eps) <= gamma


def test_hodges_lehmann_with_too_few_pairs_is_unbounded():
    assert rs.hodges_lehmann([0.1, 0.2], 0.9)[1:] == (-math.inf, math.inf)


def test_rank_correlation_equals_spearman_and_ranks_infinity_highest():
    x, g = RNG.uniform(0, 1, 10), RNG.normal(0, 1, 10)
    assert rs.rank_correlation(x, g)["rho"] == pytest.approx(stats.spearman(x, g)["rho"])
    assert rs.rank_correlation(x, g)["p_value"] == pytest.approx(stats.spearman(x, g)["p_value"])
    g_inf = g.copy()
    g_inf[np.argmax(g)] = np.inf
    assert rs.rank_correlation(x, g_inf)["rho"] == pytest.approx(stats.spearman(x, g)["rho"])
    g_nan = g.copy()
    g_nan[0] = np.nan
    assert rs.rank_correlation(x, g_nan)["n"] == 9


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert rs.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = rs.holm([0.5, math.nan, 0.2])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.4)


def test_smallest_p():
    assert rs.smallest_p(4) == 0.125 and rs.smallest_p(12) == pytest.approx(2 / 4096)


# -- the grid -----------------------------------------------------------------------------------------------
STUDY = {
    "nnunet_dir": "/x/nnunet", "configuration": "3d_study", "dataset_id": 600,
    "foreground_shares": [0.1, 0.005, 0.001], "lengths": [10, 100], "seeds": [0, 1],
    "modes": ["cps", "efficiency", "performance"], "iterations_per_epoch": 40, "alpha": 0.05,
    "equivalence_margin": 0.02, "flops_third_max": 0.4,
}  # fmt: skip


def test_level_names_and_manifest():
    assert [level.name for level in study.levels(STUDY)] == ["fg10", "fg0p5", "fg0p1"]
    assert [level.folder for level in study.levels(STUDY)][2] == "Dataset602_fg0p1"
    assert rs.target_share("fg0p5") == pytest.approx(0.005) and rs.label("fg0p1") == "0.1%"
    rows = study.manifest(STUDY)
    assert len(rows) == 3 * 2 * 2 * 3
    assert len({r["fold_dir"] for r in rows}) == len(rows)  # no two runs share a folder
    assert rows[0]["fold_dir"] == (
        "/x/nnunet/results/length10_seed0/Dataset600_fg10/nnUNetTrainer_PGPS_CPS__nnUNetPlans__3d_study/fold_0"
    )
    assert study.iterations(STUDY, 10) == 4 and study.iterations(STUDY, 25) == 10
    with pytest.raises(ValueError, match="distinct"):
        study.levels({**STUDY, "foreground_shares": [0.01, 0.01]})


def test_holdout_split_keeps_cases_apart(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"numTraining": 10}))
    split = json.loads(study.write_holdout_split(tmp_path, 6).read_text())
    assert len(split) == 1 and split[0]["train"] == [f"case_{i:03d}" for i in range(6)]
    assert split[0]["val"] == [f"case_{i:03d}" for i in range(6, 10)]
    with pytest.raises(ValueError, match="held-out"):
        study.holdout_split(["a", "b"], 2)


def test_foreground_share_is_hit_and_only_the_lesions_change():
    base = synth.preset("imbalance", num_cases=6, shape=(32, 32, 32))
    for share in (0.05, 0.002):
        config = synth.with_foreground_share(base, share)
        measured = synth.measured_foreground_share(config)
        assert abs(measured / share - 1) <= synth.SHARE_TOLERANCE
        assert {k: v for k, v in config.to_dict().items() if k != "radii"} == {
            k: v for k, v in base.to_dict().items() if k != "radii"
        }
        lo, hi = config.radii[0]
        assert hi / lo == pytest.approx(base.radii[0][1] / base.radii[0][0])
    with pytest.raises(ValueError, match="out of reach"):
        synth.with_foreground_share(base, 0.9)
    with pytest.raises(ValueError, match="out of reach"):
        synth.with_foreground_share(synth.preset("imbalance", num_cases=2), 1e-7)


def test_make_label_is_make_cases_label():
    config = synth.preset("imbalance", num_cases=3)
    assert np.array_equal(synth.make_label(config, 2), synth.make_case(config, 2)[1])


# -- decision rules on constructed results ------------------------------------------------------------------
def fake_results(perf_gain: float, eff_gain: float, short_extra: float, imbalance_slope: float, seeds=(0, 1, 2)):
    """A results frame of 4 levels x 2 lengths x seeds with Dice built from the given effects plus noise."""
    rows, chars = [], []
    shares = {"fg10": 0.1, "fg2": 0.02, "fg0p5": 0.005, "fg0p1": 0.001}
    rng = np.random.default_rng(7)
    for level, share in shares.items():
        chars.append({"dataset": level, "num_classes": 2, "training_cases": 16, "patch_to_volume_coverage": 1.0,
                      "smallest_class_frequency": share, "foreground_frequency": share})  # fmt: skip
        for length in (10, 100):
            for seed in seeds:
                cps = 0.6 + 0.2 * (length == 100) + rng.normal(0, 0.005)
                bonus = short_extra * (length == 10) - imbalance_slope * math.log10(share)
                for mode, gain in (("cps", 0.0), ("efficiency", eff_gain), ("performance", perf_gain)):
                    dice = cps * (1 + gain + (bonus if mode != "cps" else 0) + rng.normal(0, 0.002) * (mode != "cps"))
                    voxels = {"cps": 1.0, "efficiency": 0.344, "performance": 0.936}[mode] * 1e7
                    rows.append({
                        "run": len(rows), "dataset": level, "backbone": "unet", "mode": mode, "sampler": "default",
                        "mirroring": True, "length": length, "fold": 0, "seed": seed, "status": "complete",
                        "dice": dice, "iterated_voxels": voxels, "train_time_s": voxels / 1e6,
                        "p_max_mean_epoch_time_s": 1.0, "epochs": 10, "iterations_per_epoch": length // 2.5,
                        "relative_runtime": voxels / 1e7, "fold_dir": "",
                    })  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(chars)


def verdicts_of(results, chars, **params):
    p = {"alpha": 0.05, "equivalence_margin": 0.02, "flops_third_max": 0.4, **params}
    return {v.claim: v.verdict for v in rs.verdicts(rs.analyse(rs.runs_table(results, chars), p))}


def test_article_like_effects_make_every_claim_hold():
    # Performance +3%; both modes +5% more when short; +0.4% (10%) to +1.2% (0.1%) more on rarer foreground,
    # so Efficiency stays within the +-2% margin of CPS at full length
    results, chars = fake_results(perf_gain=0.03, eff_gain=0.0, short_extra=0.05, imbalance_slope=0.004)
    assert verdicts_of(results, chars) == {1: rs.HOLDS, 2: rs.HOLDS, 3: rs.HOLDS, 4: rs.HOLDS}


def test_each_claim_can_fail_or_stay_undecided_alone():
    found = verdicts_of(*fake_results(perf_gain=0.03, eff_gain=0.0, short_extra=0.05, imbalance_slope=0.0))
    assert found == {1: rs.HOLDS, 2: rs.HOLDS, 3: rs.HOLDS, 4: rs.UNDECIDED}  # no imbalance effect
    found = verdicts_of(*fake_results(perf_gain=0.03, eff_gain=0.05, short_extra=0.05, imbalance_slope=0.004))
    assert found[2] == rs.FAILS  # Efficiency 5% above CPS: outside the margin
    found = verdicts_of(*fake_results(perf_gain=0.03, eff_gain=0.0, short_extra=-0.06, imbalance_slope=0.004))
    assert found[3] == rs.FAILS and found[1] == rs.HOLDS  # PGPS behind CPS when short


def test_reversed_effects_make_the_claims_fail():
    found = verdicts_of(*fake_results(perf_gain=-0.03, eff_gain=-0.05, short_extra=-0.05, imbalance_slope=-0.004))
    assert found == {1: rs.FAILS, 2: rs.FAILS, 3: rs.FAILS, 4: rs.FAILS}


def test_one_seed_is_undecided_and_says_so():
    results, chars = fake_results(0.03, 0.0, 0.05, 0.004, seeds=(0,))
    analysis = rs.analyse(rs.runs_table(results, chars), {"alpha": 0.05, "equivalence_margin": 0.02,
                                                          "flops_third_max": 0.4})  # fmt: skip
    found = rs.verdicts(analysis)
    assert found[0].verdict == rs.UNDECIDED and "no p below 0.125 is possible" in found[0].evidence


def test_flops_above_the_bound_fail_claim_2():
    results, chars = fake_results(0.0, 0.0, 0.0, 0.0)
    assert verdicts_of(results, chars)[2] == rs.HOLDS
    assert verdicts_of(results, chars, flops_third_max=0.3)[2] == rs.FAILS


def test_cps_at_zero_gives_infinite_gains_not_lost_pairs():
    results, chars = fake_results(0.03, 0.0, 0.05, 0.0)
    zero = (results["length"] == 10) & (results["dataset"] == "fg0p1")
    results.loc[zero & (results["mode"] == "cps"), "dice"] = 0.0
    results.loc[zero & (results["mode"] == "efficiency") & (results["seed"] == 0), "dice"] = 0.0
    runs = rs.runs_table(results, chars)
    sel = runs[(runs["dataset"] == "fg0p1") & (runs["length"] == 10)]
    perf = sel[sel["mode"] == "performance"]["relative_dice"]
    assert np.isinf(perf).all() and (sel[sel["mode"] == "cps"]["relative_dice"] == 1).all()
    eff = sel[sel["mode"] == "efficiency"].set_index("seed")["relative_dice"]
    assert math.isnan(eff[0]) and np.isinf(eff[1])
    analysis = rs.analyse(runs, {"alpha": 0.05, "equivalence_margin": 0.02, "flops_third_max": 0.4})
    w = analysis.wilcoxon.set_index(["a", "b", "length"])
    assert w.loc[("performance", "cps", 10), "pairs"] == 12 and w.loc[("performance", "cps", 10), "infinite"] == 3
    assert w.loc[("efficiency", "cps", 10), "pairs"] == 11  # seed 0: both at Dice 0, undefined, left out
    assert w.loc[("efficiency", "cps", 10), "infinite"] == 2  # CPS's own relative Dice is 1 even at Dice 0


def test_render_writes_every_output_with_generated_text(tmp_path):
    results, chars = fake_results(0.03, 0.0, 0.05, 0.004)
    folder = tmp_path / "collected"
    folder.mkdir()
    results.to_csv(folder / "results.csv", index=False)
    chars.to_csv(folder / "characteristics.csv", index=False)
    (folder / "study.json").write_text(json.dumps(STUDY))
    written = rs.render_study(folder, folder / "study.json", tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in written) == sorted(study.study_outputs())
    text = (tmp_path / "out" / "results.md").read_text()
    assert text.count("**Claim ") == 4 and "## How the verdicts are decided" in text
    assert "72 of 72 runs finished" in text
    claims = pd.read_csv(tmp_path / "out" / "tables" / "study_claims.csv")
    assert claims["verdict"].tolist() == [1, 1, 1, 1]
    assert (tmp_path / "out" / "figures" / "study_convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
