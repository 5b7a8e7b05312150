"""The generated pages of the documentation, committed beside the written ones: the command-line reference from the
parsers, the configuration reference from the schema, and the timings from docs/timings.yaml (with the loader
benchmark's table from its committed JSON). ``python docs/gen_pages.py`` writes them; tests/test_docs.py fails when a
committed page is not what this script writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cli_reference() -> str:
    import argparse

    from pgps.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["# Command line reference", "", "Generated from the parsers (`pgps COMMAND --help`).", "", "```text",
           parser.format_help().rstrip(), "```", ""]  # fmt: skip
    for name, sub in commands.choices.items():
        out += [f"## pgps {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _type(spec: dict) -> str:
    kind = spec.get("type", "")
    if isinstance(kind, list):
        kind = " or ".join(map(str, kind))
    if "enum" in spec:
        kind += f" ({', '.join(map(str, spec['enum']))})"
    return str(kind)


def _rows(properties: dict, prefix: str) -> list[str]:
    rows = []
    for key, spec in properties.items():
        path = f"{prefix}{key}"
        if "$ref" in spec:
            spec = {**spec, "type": spec["$ref"].rsplit("/", 1)[-1]}
        default = f"`{json.dumps(spec['default'])}`" if "default" in spec else ""
        description = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(spec)} | {default} | {description} |")
        if spec.get("type") == "object" and "properties" in spec:
            rows += _rows(spec["properties"], f"{path}.")
    return rows


def config_reference() -> str:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    header = ["| key | type | default | what it is |", "|---|---|---|---|"]
    out = ["# Configuration reference", "",
           "Generated from `workflow/schemas/config.schema.yaml`, which Snakemake's `validate` applies (with its "
           "defaults) to every config, `config.yaml` included.", "", *header]  # fmt: skip
    out += _rows(schema["properties"], "")
    for name, spec in schema.get("$defs", {}).items():
        if "properties" in spec:
            description = " ".join(str(spec.get("description", "")).split())
            out += ["", f"## `{name}`", "", description, "", *header, *_rows(spec["properties"], "")]
    return "\n".join(out) + "\n"


def loader_table(path: Path) -> list[str]:
    results = json.loads(path.read_text())
    out = ["| stage | patch | batch | Split-Crop | Single-Crop | per-sample |", "|---|---|---|---|---|---|"]
    for result in results["results"]:
        rows = result["rows"]
        cps = rows[0]
        planned = next(r for r in rows if r["loader"] == "cps-planned")
        out.append(f"| {result['preset']}: CPS {cps['cpu_s'] * 1e3:.1f} ms per batch; the CPS trainer's loader "
                   f"{planned['cpu_s'] * 1e3:.1f} ms ({planned['ratio']:.2f}) | | | | | |")  # fmt: skip
        cells: dict[int, dict] = {}
        for row in rows:
            if row["stage"] >= 0:
                cells.setdefault(row["stage"], {})[row["loader"]] = row
        for stage, by in sorted(cells.items()):
            first = next(iter(by.values()))

            def cell(name: str, by=by) -> str:
                row = by.get(name)
                return f"{row['cpu_s'] * 1e3:.0f} ms / {row['ratio']:.2f}" if row else "n/a"

            out.append(f"| {stage} | {first['patch_size']} | {first['batch_size']} | {cell('split_crop')} | "
                       f"{cell('single_crop')} | {cell('before')} |")  # fmt: skip
    return out


def timings() -> str:
    entries = yaml.safe_load((ROOT / "docs" / "timings.yaml").read_text())
    out = ["# Timings", "",
           "Every measured duration the documentation quotes, with the commit it was measured on "
           "(generated from `docs/timings.yaml`; machines are shared, so only ratios measured side by side in one "
           "run compare).", "", "| what | measured | commit | machine | how |", "|---|---|---|---|---|"]  # fmt: skip
    tables = []
    for e in entries:
        value = e["value"] + (f" ({e['note']})" if e.get("note") else "")
        out.append(f"| {e['what']} | {value} | {e['commit']} | {e['machine']} | `{e['how']}` |")
        if e.get("table"):
            tables += ["", f"## {e['what']} at {e['commit']}", "",
                       "CPU ms per batch / CPU time per voxel relative to CPS (nnU-Net's own loader) at every "
                       "PGPS-Performance stage, from `" + e["table"] + "`:", "",
                       *loader_table(ROOT / e["table"])]  # fmt: skip
    return "\n".join(out + tables) + "\n"


PAGES = {"reference/cli.md": cli_reference, "reference/config.md": config_reference, "timings.md": timings}
"""Generated page (relative to docs/pages) -> the function that writes it."""
NOTICE = "<!-- generated by docs/gen_pages.py from the code; do not edit -->\n"


def generated(name: str) -> str:
    return NOTICE + PAGES[name]()


if __name__ == "__main__":
    for name in PAGES:
        path = ROOT / "docs" / "pages" / name
        path.write_text(generated(name))
        print(path)
