"""Config files read strictly: a mapping that repeats a key is refused (YAML keeps the last one silently).

Needs PyYAML (``pgps[workflow]``; Snakemake brings it): the workflow calls :func:`check_config_files` on its
``--configfile`` files before it builds the DAG.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import yaml


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """Refuse a config file in which a mapping repeats a key: YAML loaders keep the last silently (a second
    ``demo:`` block would replace the first). Raises ``ValueError`` naming the file, the line and the key."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ValueError(f"{loader.name}, line {line}: key {key!r} appears twice in one mapping (first at "
                                 f"line {seen[key]}); YAML would keep only the last")  # fmt: skip
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in paths:
        with open(path) as f:
            loader = Strict(f)
            loader.name = os.fspath(path)
            try:
                loader.get_single_data()
            finally:
                loader.dispose()
