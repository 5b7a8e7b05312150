"""The synthetic study's statistics and verdicts (``pgps.report.study``) and its grid (``pgps.experiments.study``), on
constructed data: the exact signed-rank distribution, the Hodges-Lehmann interval as the inverted signed-rank test
(two-sided and one-sided, non-inferiority), Holm's adjustment, the replicate datasets of the grid, the decision rules,
and a render of every output. No training here; the miniature study that trains is ``tests/test_study.py``."""

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
PARAMS = {"alpha": 0.05, "noninferiority_margin": 0.02, "flops_third_max": 0.4}


# -- rank statistics ------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("center", [-0.03, -0.012, 0.0])
def test_noninferiority_test_is_scipys_one_sided_test_and_agrees_with_the_interval(center):
    """Claim 2's test: the one-sided exact signed-rank test of d + margin > 0 (scipy, written out here), which
    rejects exactly when the lower end of the 1 - 2 alpha Hodges-Lehmann interval lies above -margin."""
    margin, alpha = 0.02, 0.05
    d = RNG.normal(center, 0.01, 15)
    r = rs.paired_test(d, alpha, shift=margin, alternative="greater")
    assert r["p_value"] == pytest.approx(scipy_stats.wilcoxon(d + margin, alternative="greater", method="exact").pvalue)
    assert r["confidence"] == pytest.approx(0.9) and r["lower"] == rs.hodges_lehmann(d, 0.9)[1]
    assert (r["p_value"] < alpha) == (r["lower"] > -margin)
    assert r["smallest_p"] == pytest.approx(1 / 2**15)


def test_two_sided_paired_test_is_the_articles_wilcoxon():
    d = RNG.normal(0.01, 0.02, 9)
    r = rs.paired_test(d, 0.05)
    assert r["p_value"] == pytest.approx(stats.wilcoxon_paired(d, np.zeros(9))["p_value"], rel=1e-12)
    assert (r["estimate"], r["lower"], r["upper"]) == rs.hodges_lehmann(d, 0.95)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert rs.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = rs.holm([0.5, math.nan, 0.2])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.4)


def test_smallest_p():
    assert rs.smallest_p(4) == 0.125 and rs.smallest_p(12) == pytest.approx(2 / 4096)
    assert rs.smallest_p(4, sides=1) == 0.0625


# -- the grid -----------------------------------------------------------------------------------------------
STUDY = {
    "nnunet_dir": "/x/nnunet", "configuration": "3d_study", "dataset_id": 600,
    "foreground_shares": [0.1, 0.005, 0.001], "lengths": [10, 100], "seeds": [0, 1],
    "modes": ["cps", "efficiency", "performance"], "iterations_per_epoch": 40, **PARAMS,
}  # fmt: skip


def test_every_seed_draws_its_own_dataset_per_level():
    assert [level.name for level in study.levels(STUDY)] == ["fg10", "fg0p5", "fg0p1"]
    replicates = study.replicates(STUDY)
    assert len(replicates) == 3 * 2 and len({r.dataset_id for r in replicates}) == 6  # one dataset per (level, seed)
    assert {(r.level.name, r.seed) for r in replicates} == {
        (lv, s) for lv in ("fg10", "fg0p5", "fg0p1") for s in (0, 1)
    }
    assert [r.dataset_id for r in replicates] == list(range(600, 606))
    assert replicates[5].folder == "Dataset605_fg0p1" and replicates[5].seed == 1 and replicates[5].name == "fg0p1_s1"
    assert rs.target_share("fg0p5") == pytest.approx(0.005) and rs.label("fg0p1") == "0.1%"
    rows = study.manifest(STUDY)
    assert len(rows) == 3 * 2 * 2 * 3
    assert len({r["fold_dir"] for r in rows}) == len(rows)  # no two runs share a folder
    # a run of seed s trains on the dataset drawn with seed s: its folder names that dataset's id
    for row in rows:
        (replicate,) = [r for r in replicates if r.level.name == row["dataset"] and r.seed == row["seed"]]
        assert f"/length{row['length']}_seed{row['seed']}/{replicate.folder}/" in row["fold_dir"]
    assert rows[0]["fold_dir"] == (
        "/x/nnunet/results/length10_seed0/Dataset600_fg10/nnUNetTrainer_PGPS_CPS__nnUNetPlans__3d_study/fold_0"
    )
    assert study.iterations(STUDY, 10) == 4 and study.iterations(STUDY, 25) == 10
    with pytest.raises(ValueError, match="distinct"):
        study.levels({**STUDY, "foreground_shares": [0.01, 0.01]})
    with pytest.raises(ValueError, match="beyond nnU-Net's 999"):
        study.replicates({**STUDY, "dataset_id": 995})


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
SHARES = {"fg10": 0.1, "fg3": 0.03, "fg1": 0.01, "fg0p3": 0.003, "fg0p1": 0.001}


def fake_results(perf: float, eff: float, short_extra: float, slope: float, seeds=range(5), noise=0.004):
    """A results frame of 5 levels x seeds x 2 lengths: each (level, seed) its own dataset (its measured share
    varies a little around the level's), CPS's Dice plus the given effects (in Dice fractions) plus noise:
    ``short_extra`` added to both modes at the short length, ``slope`` per decade of rarer foreground."""
    rows, chars = [], []
    rng = np.random.default_rng(7)
    for level, share in SHARES.items():
        for seed in seeds:
            measured = share * (1 + rng.uniform(-0.02, 0.02))
            chars.append({"dataset": study.dataset_name(level, seed), "num_classes": 2, "training_cases": 16,
                          "patch_to_volume_coverage": 1.0, "smallest_class_frequency": measured,
                          "foreground_frequency": measured})  # fmt: skip
            for length in (10, 100):
                cps = 0.4 + 0.3 * (length == 100) + rng.normal(0, 0.03)
                bonus = short_extra * (length == 10) - slope * math.log10(measured)
                for mode, effect in (("cps", 0.0), ("efficiency", eff), ("performance", perf)):
                    dice = cps + (effect + bonus + rng.normal(0, noise) if mode != "cps" else 0)
                    voxels = {"cps": 1.0, "efficiency": 0.344, "performance": 0.936}[mode] * 1e7
                    rows.append({
                        "run": len(rows), "dataset": level, "backbone": "unet", "mode": mode, "sampler": "default",
                        "mirroring": True, "length": length, "fold": 0, "seed": seed, "status": "complete",
                        "dice": dice, "iterated_voxels": voxels, "train_time_s": voxels / 1e6,
                        "p_max_mean_epoch_time_s": 1.0, "epochs": 10, "iterations_per_epoch": length // 2.5,
                        "relative_runtime": voxels / 1e7,
                        "fold_dir": f"/x/nnunet/results/length{length}_seed{seed}/Dataset6{len(rows):02d}_{level}/f",
                    })  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(chars)


def analysis_of(results, chars, **params):
    return rs.analyse(rs.runs_table(results, chars, "/x/nnunet"), {**PARAMS, **params})


def verdicts_of(results, chars, **params):
    return {v.claim: v.verdict for v in rs.verdicts(analysis_of(results, chars, **params))}


def test_article_like_effects_make_every_claim_hold():
    # Performance +3 points, Efficiency +0; both +5 points more when short; +0.4 points per decade rarer
    results, chars = fake_results(perf=0.03, eff=0.0, short_extra=0.05, slope=0.004)
    assert verdicts_of(results, chars) == {1: rs.HOLDS, 2: rs.HOLDS, 3: rs.HOLDS, 4: rs.HOLDS, 5: rs.HOLDS}


def test_without_effects_nothing_holds_but_non_inferiority():
    # every PGPS run scores exactly its CPS run's Dice: no difference to test, and every pair within the margin
    found = verdicts_of(*fake_results(perf=0.0, eff=0.0, short_extra=0.0, slope=0.0, noise=0.0))
    assert found == {1: rs.UNDECIDED, 2: rs.HOLDS, 3: rs.UNDECIDED, 4: rs.UNDECIDED, 5: rs.UNDECIDED}


def test_each_claim_can_fail_or_stay_undecided_alone():
    found = verdicts_of(*fake_results(perf=0.03, eff=0.0, short_extra=0.05, slope=0.0))
    assert found == {1: rs.HOLDS, 2: rs.HOLDS, 3: rs.HOLDS, 4: rs.UNDECIDED, 5: rs.HOLDS}  # no imbalance effect
    found = verdicts_of(*fake_results(perf=0.03, eff=-0.05, short_extra=0.05, slope=0.004))
    assert found[2] == rs.FAILS  # Efficiency 5 points below CPS: inferior beyond the margin
    found = verdicts_of(*fake_results(perf=0.03, eff=-0.01, short_extra=0.05, slope=0.0))
    assert found[2] == rs.HOLDS  # 1 point below, within the 2-point margin: non-inferior
    found = verdicts_of(*fake_results(perf=0.03, eff=0.0, short_extra=-0.06, slope=0.004))
    assert found[3] == rs.FAILS and found[1] == rs.HOLDS  # PGPS behind CPS when short
    found = verdicts_of(*fake_results(perf=0.0, eff=0.03, short_extra=0.0, slope=0.0))
    assert found[5] == rs.FAILS and found[1] == rs.UNDECIDED  # the small patches alone carry the gain


def test_reversed_effects_make_the_claims_fail():
    found = verdicts_of(*fake_results(perf=-0.05, eff=-0.03, short_extra=-0.05, slope=-0.004))
    assert found == {1: rs.FAILS, 2: rs.FAILS, 3: rs.FAILS, 4: rs.FAILS, 5: rs.FAILS}


def test_holm_adjusts_over_every_test_of_the_claims():
    analysis = analysis_of(*fake_results(perf=0.03, eff=0.0, short_extra=0.05, slope=0.004))
    tests = analysis.tests
    assert len(tests) == 8 and sorted(set(tests["claim"])) == [1, 2, 3, 4, 5]
    assert tests["p_holm"].tolist() == pytest.approx(rs.holm(tests["p_value"].tolist()))
    assert (tests["p_holm"] >= tests["p_value"]).all()
    # the pairs are the (level, seed) datasets: 25, not runs and not levels
    assert set(tests["pairs"]) == {25}


def test_one_replicate_is_undecided_and_says_so():
    results, chars = fake_results(0.03, 0.0, 0.05, 0.004, seeds=(0,))
    found = rs.verdicts(analysis_of(results, chars))
    assert found[0].verdict == rs.UNDECIDED and "no p below 0.062 is possible" in found[0].evidence


def test_flops_above_the_bound_fail_claim_2():
    results, chars = fake_results(0.0, 0.0, 0.0, 0.0)
    assert verdicts_of(results, chars)[2] == rs.HOLDS
    assert verdicts_of(results, chars, flops_third_max=0.3)[2] == rs.FAILS


def test_cps_at_zero_keeps_every_pair_finite():
    """A CPS run at Dice 0 is a pair like any other: its difference is finite, nothing is infinite or left out."""
    results, chars = fake_results(0.03, 0.0, 0.05, 0.0)
    zero = (results["length"] == 10) & (results["dataset"] == "fg0p1") & (results["mode"] == "cps")
    results.loc[zero, "dice"] = 0.0
    runs = rs.runs_table(results, chars, "/x/nnunet")
    assert np.isfinite(runs["dice_difference"]).all()
    sel = runs[(runs["dataset"] == "fg0p1") & (runs["length"] == 10) & (runs["mode"] == "performance")]
    assert (sel["dice_difference"] == sel["dice"]).all()
    assert set(analysis_of(results, chars).comparisons["pairs"]) == {25}


def test_run_folders_are_written_relative_to_the_study():
    results, chars = fake_results(0.0, 0.0, 0.0, 0.0)
    runs = rs.runs_table(results, chars, "/x/nnunet")
    assert runs["run_dir"].str.startswith("results/length").all() and not runs["run_dir"].str.startswith("/").any()
    results.loc[0, "fold_dir"] = "/elsewhere/fold_0"
    with pytest.raises(ValueError, match="outside the study's nnU-Net folder"):
        rs.runs_table(results, chars, "/x/nnunet")


def test_each_dataset_gets_its_own_measured_share():
    results, chars = fake_results(0.0, 0.0, 0.0, 0.0)
    runs = rs.runs_table(results, chars, "/x/nnunet")
    measured = chars.set_index("dataset")["smallest_class_frequency"]
    for r in runs.itertuples():
        assert r.smallest_class_frequency == measured[study.dataset_name(r.dataset, r.seed)]


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
    assert text.count("**Claim ") == 5 and "## How the verdicts are decided" in text
    assert "150 of 150 runs finished" in text and "Holm-adjusted together" in text and "Scope:" in text
    claims = pd.read_csv(tmp_path / "out" / "tables" / "study_claims.csv")
    assert claims["verdict"].tolist() == [1, 1, 1, 1, 1]
    assert (tmp_path / "out" / "figures" / "study_convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in (tmp_path / "out").rglob("*"):
        if path.suffix in (".csv", ".md", ".tex"):
            assert "/x/nnunet" not in path.read_text(), path  # no machine's absolute path in an output
