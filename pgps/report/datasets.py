"""The article's datasets: workflow keys, the order its tables list them in, and printed names.

A dataset the article does not know (the demo's synthetic ``lesions``, say) is shown under its
own key, after the article's datasets.
"""

from __future__ import annotations

from collections.abc import Iterable

from pgps import names

ARTICLE_DATASETS: dict[str, str] = {
    "MSD_Brain": "MSD Brain",
    "MSD_Heart": "MSD Heart",
    "MSD_Liver": "MSD Liver",
    "MSD_Hippocampus": "MSD Hippocampus",
    "MSD_Prostate": "MSD Prostate",
    "MSD_Lung": "MSD Lung",
    "MSD_Pancreas": "MSD Pancreas",
    "MSD_HepaticVessel": "MSD Hepatic Vessel",
    "MSD_Spleen": "MSD Spleen",
    "MSD_Colon": "MSD Colon",
    "BTCV": "BTCV",
    "KiTS23": "KiTS23",
    "AMOS22": "AMOS22",
    "ToothFairy2": "ToothFairy2",
    "TotalSegmentatorV2": "TotalSegmentatorV2",
}
"""Workflow key -> name as printed in the article's Table 1, in Table 1's row order."""

MSD_DATASETS: tuple[str, ...] = tuple(k for k in ARTICLE_DATASETS if k.startswith("MSD_"))
"""The ten Medical Segmentation Decathlon tasks (Table D.9's rows)."""

UNMIRRORED_DATASETS: frozenset[str] = frozenset({"ToothFairy2", "TotalSegmentatorV2"})
"""Datasets the article's main grid trains without mirroring (Section 3.2)."""

BACKBONES: dict[str, str] = {key: backbone.label for key, backbone in names.BACKBONES.items()}
"""Backbone key -> name as printed in Tables 3 and D.7 (:data:`pgps.names.BACKBONES`)."""


def label(dataset: str) -> str:
    """The printed name of ``dataset`` (its own key when the article does not know it)."""
    return ARTICLE_DATASETS.get(dataset, dataset)


def backbone_label(backbone: str) -> str:
    """The printed name of ``backbone``."""
    return BACKBONES.get(backbone, backbone)


def ordered(datasets: Iterable[str], first: Iterable[str] = ()) -> list[str]:
    """``first`` (kept even when absent from ``datasets``), then the other datasets: article ones
    in the article's order, then unknown ones sorted by name. No repeats."""
    out = list(dict.fromkeys(first))
    rest = set(datasets) - set(out)
    article = [d for d in ARTICLE_DATASETS if d in rest]
    return out + article + sorted(rest - set(article))
