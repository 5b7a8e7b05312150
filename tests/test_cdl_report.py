"""pgps cdl-report on made-up runs: the paired statistics recomputed here from their definitions (seed means, t, Holm,
Hodges-Lehmann), the shared easy model checked by SHA-256, outputs without absolute paths, and the generated
paragraph."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pgps.experiments import cdl as experiment
from pgps.report import cdl

CONFIG = {
    "trainer": "nnUNetTrainer_PGPS_CPS_NoMirroring",
    "easy_epochs": 4,
    "hard_epochs": 6,
    "iterations_per_epoch": 5,
    "configuration": "3d_light",
    "fold": 0,
    "enhanced_id": 611,
    "dataset_id": 610,
}
SEEDS, CASES = (0, 1, 2), 6
# the shift of each model's Dice (points); easy_then_hard also gains 2 + seed / 2 over the control
SHIFT = {"easy": -5.0, "easy_then_hard": 0.0, "easy_continued": 0.0, "uniform": 0.0}
SEED_EFFECT = {0: 1.0, 1: -1.0, 2: 0.5}


def made_up_runs(tmp: Path, tamper: str | None = None) -> dict:
    """A manifest of SEEDS x models: surface tables with two classes, dataset.json, difficulty.csv, fold folders."""
    rng = np.random.default_rng(7)
    manifest = {"config": CONFIG, "seeds": {}}
    for seed in SEEDS:
        root = tmp / f"seed{seed}"
        root.mkdir(parents=True)
        cases = [f"case_{10 + i:03d}" for i in range(CASES)]
        meta = {
            "labels": {"background": 0, "organ_1": 1, "organ_2": 2},
            "pgps_synth": {
                "case_difficulty": {c: float(rng.uniform()) for c in [f"case_{i:03d}" for i in range(10)] + cases}
            },
        }
        (root / "dataset.json").write_text(json.dumps(meta))
        pd.DataFrame(
            {
                "case": [f"case_{i:03d}" for i in range(10)],
                "ds": rng.uniform(0.6, 1, 10),
                "group": ["easy"] * 4 + ["hard"] * 3 + ["erroneous"] * 3,
            }
        ).to_csv(root / "difficulty.csv")
        base = rng.uniform(60, 80, size=(CASES, 2))
        entry = {
            "dataset_json": str(root / "dataset.json"),
            "difficulty": str(root / "difficulty.csv"),
            "surface": {},
            "fold_dirs": {},
        }
        for model in experiment.MODELS:
            noise = rng.normal(0, 0.5, size=(CASES, 2))
            extra = 2 + seed / 2 if model == "easy_then_hard" else 0.0  # +2, +2.5, +3 over the control
            dice = (base + SHIFT[model] + SEED_EFFECT[seed] + extra + noise) / 100
            if model == "uniform":  # easy_then_hard's Dice, off by +0.6, -0.8 or +0.2 points: no consistent sign
                final = pd.read_csv(entry["surface"]["easy_then_hard"])["dice"].to_numpy().reshape(CASES, 2)
                dice = final + ((0.6, -0.8, 0.2)[seed] + noise / 10) / 100
            rows = [
                {"case": c, "class": k + 1, "dice": dice[i, k], "nsd": min(1.0, dice[i, k] + 0.05), "tolerance_mm": 2.0}
                for i, c in enumerate(cases)
                for k in range(2)
            ]
            path = root / f"{model}.csv"
            pd.DataFrame(rows).to_csv(path, index=False)
            entry["surface"][model] = str(path)
            fold = root / model
            fold.mkdir()
            entry["fold_dirs"][model] = str(fold)
        (root / "easy" / "checkpoint_final.pth").write_bytes(f"weights of seed {seed}".encode())
        sha = hashlib.sha256(f"weights of seed {seed}".encode()).hexdigest()
        for model in ("easy_then_hard", "easy_continued"):
            loaded = sha if tamper != f"{seed}/{model}" else hashlib.sha256(b"another").hexdigest()
            record = {
                "path": str(root / "easy" / "checkpoint_final.pth"),
                "sha256": loaded,
                "weights_sha256": "ab" * 32,
                "source_trainer": "x",
                "source_epochs": 4,
            }
            (root / model / cdl.INIT_FILE).write_text(json.dumps(record))
        manifest["seeds"][str(seed)] = entry
    return manifest


def per_case(manifest: dict, model: str) -> pd.Series:
    """Dice in points per (seed, case), averaged over the classes, read straight from the surface tables."""
    parts = []
    for seed, entry in manifest["seeds"].items():
        t = pd.read_csv(entry["surface"][model])
        parts.append(t.groupby("case")["dice"].mean().mul(100).rename(lambda c, s=seed: (int(s), c)))
    return pd.concat(parts)


def test_the_statistics_are_their_definitions(tmp_path):
    manifest = made_up_runs(tmp_path)
    cases, _ = cdl.case_table(manifest)
    compared = cdl.comparisons(cases).set_index(["metric", "arm", "against"])
    p_values = []
    for arm, against in experiment.COMPARISONS:
        d = per_case(manifest, arm) - per_case(manifest, against)
        means = np.array([d[[k for k in d.index if k[0] == s]].mean() for s in SEEDS])
        t = means.mean() / (means.std(ddof=1) / math.sqrt(len(means)))
        p = 2 * stats.t.sf(abs(t), df=len(means) - 1)
        half = stats.t.ppf(0.975, df=len(means) - 1) * means.std(ddof=1) / math.sqrt(len(means))
        walsh = [(a + b) / 2 for a, b in itertools.combinations_with_replacement(d.to_numpy(), 2)]
        row = compared.loc[("dice", arm, against)]
        assert row["mean_difference"] == pytest.approx(d.mean())
        assert row["t"] == pytest.approx(t) and row["p_value"] == pytest.approx(p)
        assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((means.mean() - half, means.mean() + half))
        assert row["hl"] == pytest.approx(np.median(walsh))
        assert row["hl_lower"] <= row["hl"] <= row["hl_upper"]
        assert row["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d.to_numpy()).pvalue)
        assert (row["seeds"], row["cases"], row["df"]) == (3, 18, 2)
        assert row["better_cases"] == int((d > 0).sum())
        p_values.append(p)
    low, high = sorted(p_values)  # Holm over two: the smaller times 2, the larger at least that
    holm = {low: min(1, 2 * low), high: max(min(1, 2 * low), high)}
    for (arm, against), p in zip(experiment.COMPARISONS, p_values, strict=True):
        assert compared.loc[("dice", arm, against), "p_holm"] == pytest.approx(holm[p])
    # easy_then_hard beats the control by 2, 2.5, 3 points per seed (+ noise): significant; ties uniform: not
    assert compared.loc[("dice", "easy_then_hard", "easy_continued"), "verdict"] == "better"
    assert compared.loc[("dice", "easy_then_hard", "uniform"), "verdict"] == "no difference shown"


def test_verdicts():
    row = {"mean_difference": -1.0, "p_holm": 0.01}
    assert cdl.verdict(row) == "worse"
    assert cdl.verdict({**row, "p_holm": 0.2}) == "no difference shown"
    assert cdl.verdict({**row, "p_holm": math.nan}) == "not tested"


def test_render_writes_the_outputs_and_checks_the_shared_easy_model(tmp_path):
    manifest = made_up_runs(tmp_path / "runs")
    out = tmp_path / "out"
    written = cdl.render_cdl(manifest, out, notes="Run: made up.")
    assert sorted(p.name for p in written) == sorted(cdl.OUTPUTS) and all(p.is_file() for p in written)
    for path in written:  # no path of this machine in a committed output
        assert str(tmp_path) not in path.read_text(), path.name
    compared = pd.read_csv(out / "comparisons.csv")
    assert len(compared) == 4 and set(compared["metric"]) == {"dice", "nsd"}
    table = pd.read_csv(out / "table5.csv", index_col="class")
    assert list(table.index) == ["organ_1", "organ_2", "average"]
    assert table.loc["average", "easy_then_hard.dsc"] == pytest.approx(per_case(manifest, "easy_then_hard").mean())
    md = (out / "table5.md").read_text()
    assert "| published: final - only easy course | +1.34 |" in md and "Run: made up." in md
    difficulty = (out / "difficulty.md").read_text()
    for seed in SEEDS:
        sha = hashlib.sha256(f"weights of seed {seed}".encode()).hexdigest()[:16]
        assert f"| {seed} | {sha} | {sha} | {sha} |" in difficulty
    assert "| 0 | 10 | 4 | 3 | 3 |" in difficulty
    paragraph = cdl.results_block(out)
    dice = compared[compared["metric"] == "dice"].set_index("against")
    assert f"{dice.loc['easy_continued', 'mean_difference']:+.2f} Dice points" in paragraph
    assert f"Holm {dice.loc['easy_continued', 'p_holm']:.3f}: **better**" in paragraph
    assert "3 seeds" in paragraph and "6 clean-labelled test cases per seed" in paragraph
    assert "(4 + 6) x 5" not in paragraph and "50 iterations per final model" in paragraph
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) == len(SEEDS) * CASES * len(experiment.MODELS)


def test_a_continuation_that_loaded_another_file_stops_the_report(tmp_path):
    manifest = made_up_runs(tmp_path, tamper="1/easy_continued")
    with pytest.raises(ValueError, match=r"seed 1: easy_continued loaded .* not the easy model's checkpoint_final"):
        cdl.render_cdl(manifest, tmp_path / "out")


def test_results_block_is_pending_until_rendered(tmp_path):
    assert cdl.results_block(tmp_path) == cdl.PENDING
