"""The one table of names (pgps.names) against everything that names a mode, sampler, backbone, loss or length: the
workflow config schema's enums, the command line's choices, the report's labels, the experiment grid and the nnU-Net
trainer variants (their names parse back to the factors that make them)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from pgps import names

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


def enums(node):
    """Every ``enum`` list of a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "enum":
                yield list(value)
            else:
                yield from enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from enums(value)


def test_the_schema_enums_are_the_table():
    """Every enum of the schema that lists names lists exactly one of the table's name lists, and every one is used."""
    keys = {*names.MODES, *names.SAMPLERS, "default", *names.BACKBONES, *names.LOSSES, *names.TRAINING_LENGTHS}
    tables = {tuple(v): k for k, v in names.SCHEMA_ENUMS.items()}
    used = set()
    for enum in enums(SCHEMA):
        if set(enum) & keys:
            assert tuple(enum) in tables, f"schema enum {enum} is not a list of pgps.names"
            used.add(tables[tuple(enum)])
    assert used == set(names.SCHEMA_ENUMS)


def parser_choices(command: str, option: str) -> list:
    from pgps.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in commands.choices[command]._actions if option in a.option_strings)
    return list(action.choices)


def test_the_command_line_and_the_report_read_the_table():
    from pgps.report import datasets, style, tables

    assert parser_choices("schedule", "--mode") == list(names.MODES)
    assert list(style.STRATEGIES) == list(names.MODES)
    assert [s.label for s in style.STRATEGIES.values()] == [m.label for m in names.MODES.values()]
    assert list(style.SAMPLERS) == list(names.SAMPLERS) and list(style.HATCHES) == list(names.SAMPLERS)
    assert tables.SHORT == {k: m.short for k, m in names.MODES.items()}
    assert datasets.BACKBONES == {k: b.label for k, b in names.BACKBONES.items()}


def test_the_grid_builds_trainer_names_by_the_grammar():
    from pgps.experiments.grid import Run, factors_of_trainer

    run = Run("BTCV", "unetr", "efficiency", "default", True, 100, 0, 0)
    assert run.trainer == "nnUNetTrainer_PGPS_UNETR_Efficiency" and run.plans == names.TRANSFORMER_PLANS
    run = Run("BTCV", "unet", "performance", "single_crop", False, 10, 0, 0, loss="dice_topk10")
    assert run.trainer == "nnUNetTrainer_PGPS_Performance_SingleCrop_NoMirroring_10pct_DiceTopK10"
    assert factors_of_trainer(run.trainer) == {"backbone": "unet", "mode": "performance", "sampler": "single_crop",
                                               "mirroring": False, "length": 10, "loss": "dice_topk10"}  # fmt: skip
    assert factors_of_trainer("nnUNetTrainer_PGPS_CPS", "nnUNetResEncUNetLPlans")["backbone"] == "resenc_l"
    with pytest.raises(ValueError, match="unknown part 'Bogus'"):
        names.parse_trainer_name("nnUNetTrainer_PGPS_CPS_Bogus")


@pytest.mark.nnunet
def test_every_trainer_variant_is_named_by_the_grammar():
    """The trainers nnU-Net finds are the table's: each name (but the memory-probe, data-curriculum and RPSS-pool
    ones, which the grammar does not spell) parses to factors that build it again, and the class trains those
    factors."""
    from pgps.nnunet import backbone_plans, variants

    assert parser_choices("backbone-plans", "--backbone") == list(backbone_plans.BACKBONES) == list(names.TRANSFORMERS)
    checked = 0
    for name in variants.TRAINERS:
        if name.endswith(("_MemoryProbe", "_DataCurriculum", "_DataCurriculumRestart", "_JournalPool")):
            continue
        factors = names.parse_trainer_name(name)
        assert names.trainer_name(**factors) == name
        cls = getattr(variants, name)
        assert cls.curriculum_mode == factors["mode"]
        assert getattr(cls, "backbone", "unet") in (factors["backbone"], None)
        assert cls.training_length == names.TRAINING_LENGTHS[factors["length"]]
        if factors["sampler"] != "default":
            assert cls.batch_sampling == factors["sampler"]
        checked += 1
    assert checked > 40
    variant = variants.trainer_class(names.trainer_name("efficiency", loss="dice_focal", lr_scaling="sqrt"))
    assert (variant.loss_variant, variant.lr_scaling) == ("dice_focal", "sqrt")
