"""The label-based difficulty discriminator of CDL-UNet (Wang et al., FLARE 2024, Sec. 2.2.2).

Every training image comes with several label sets of unknown quality (FLARE 2024: two sets of
pseudo-labels, plus a third "reference" set predicted by an nnU-Net). Their mutual agreement
tells which set to trust and how hard the image is:

- Reliability Score of set ``i`` (Eq. 1): its mean Dice with the other sets; the set with the
  highest RS is ``L_real``, the enhanced label.
- Difficulty Score of the image (Eq. 2): the mean Dice between ``L_real`` and the provided
  pseudo-label sets ``L_1``, ``L_2``. High DS: the sets agree (easy); low DS: they disagree
  (hard); very low DS: no label can be trusted (erroneous, left out of training).

Dice is :func:`pgps.metrics.label_dice` (mean over the classes present in either map; see its
convention for absent classes). Pure numpy; the folder readers import SimpleITK and tqdm when
they run.

Thresholds (the paper gives none): ``DS > 0.90`` easy, ``0.80 < DS <= 0.90`` hard, ``DS <= 0.80``
erroneous, from the authors' selection scripts (``hardData_select/easyData_sel.py`` keeps cases
whose Dice with both pseudo-label sets exceeds 0.90 for the easy course; ``hardData_sel.py``
exceeds 0.80 for the hard course). Their Dice averages 14 labels, background included, with 1.0
for labels absent from both maps, which makes values higher than the foreground-only default
here; set ``absent="one"`` and ``classes=range(14)`` to score as they do.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pgps.io import csv_text
from pgps.metrics import label_dice

EASY_THRESHOLD = 0.90
"""DS above this: easy (authors' ``easyData_sel.py`` threshold)."""
ERRONEOUS_THRESHOLD = 0.80
"""DS at or below this: erroneous (authors' ``hardData_sel.py`` threshold); between the two: hard."""
GROUPS = ("easy", "hard", "erroneous")

CSV_COLUMNS = ("case", "ds", "group", "real", "rs")
"""Leading columns of ``difficulty.csv``; then one ``rs_<set>`` and ``dice_<set>_<set>`` per label set."""


def pairwise_dice(label_sets: Sequence[np.ndarray], **dice_kwargs: Any) -> np.ndarray:
    """Symmetric matrix ``D[i, j] = Dice(L_i, L_j)`` of the label sets of one image (diagonal 1)."""
    k = len(label_sets)
    matrix = np.ones((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i, j] = matrix[j, i] = label_dice(label_sets[i], label_sets[j], **dice_kwargs)
    return matrix


def reliability_scores(dice: np.ndarray) -> np.ndarray:
    """Reliability Score of every label set from the pairwise Dice matrix (CDL-UNet Eq. 1).

    ``RS_i = (Dice(L_i, L_j) + Dice(L_i, L_k)) / 2`` for three sets ``i != j != k``; for ``K``
    sets the same mean over the ``K - 1`` others.
    """
    dice = np.asarray(dice, dtype=float)
    k = dice.shape[0]
    if dice.shape != (k, k) or k < 2:
        raise ValueError(f"need a square Dice matrix of at least 2 label sets, got shape {dice.shape}")
    return (dice.sum(axis=1) - np.diag(dice)) / (k - 1)


def most_reliable(rs: Sequence[float]) -> int:
    """Index of ``L_real``, the label set with the highest RS (Eq. 1); ties go to the lowest index."""
    return int(np.argmax(np.asarray(rs, dtype=float)))


def difficulty_score(dice: np.ndarray, real: int, provided: Sequence[int] = (0, 1)) -> float:
    """Difficulty Score of an image (CDL-UNet Eq. 2): ``DS = (Dice(L_real, L_1) + Dice(L_real, L_2)) / 2``.

    ``provided`` are the indices of the provided pseudo-label sets ``L_1, L_2`` (default the first
    two; a reference set such as a model's prediction comes after them). With more provided sets
    the mean runs over all of them. ``Dice(L_real, L_real) = 1`` when ``L_real`` is one of them.
    """
    dice = np.asarray(dice, dtype=float)
    provided = list(provided)
    if not provided or any(not 0 <= p < dice.shape[0] for p in provided):
        raise ValueError(f"provided label sets {provided} must index the {dice.shape[0]} label sets")
    return float(np.mean([dice[real, p] for p in provided]))


def difficulty_group(ds: float, easy: float = EASY_THRESHOLD, erroneous: float = ERRONEOUS_THRESHOLD) -> str:
    """``"easy"`` when ``DS > easy``, ``"erroneous"`` when ``DS <= erroneous``, else ``"hard"``."""
    check_thresholds(easy, erroneous)
    if ds > easy:
        return "easy"
    return "erroneous" if ds <= erroneous else "hard"


def check_thresholds(easy: float, erroneous: float) -> None:
    if not (0 <= erroneous <= easy <= 1):
        raise ValueError(f"thresholds must satisfy 0 <= erroneous ({erroneous}) <= easy ({easy}) <= 1")


@dataclasses.dataclass(frozen=True)
class CaseDifficulty:
    """Scores of one image: pairwise Dice, RS per label set (Eq. 1), ``L_real``, DS (Eq. 2) and its group."""

    case: str
    dice: tuple[tuple[float, ...], ...]
    rs: tuple[float, ...]
    real: int
    ds: float
    group: str

    def row(self, names: Sequence[str]) -> dict[str, Any]:
        """One ``difficulty.csv`` row; ``names`` name the label sets (e.g. their folders)."""
        out: dict[str, Any] = {"case": self.case, "ds": self.ds, "group": self.group, "real": names[self.real],
                               "rs": self.rs[self.real]}  # fmt: skip
        out.update({f"rs_{n}": v for n, v in zip(names, self.rs, strict=True)})
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                out[f"dice_{names[i]}_{names[j]}"] = self.dice[i][j]
        return out


def score_case(
    case: str,
    label_sets: Sequence[np.ndarray],
    provided: Sequence[int] = (0, 1),
    easy: float = EASY_THRESHOLD,
    erroneous: float = ERRONEOUS_THRESHOLD,
    **dice_kwargs: Any,
) -> CaseDifficulty:
    """Eq. 1 and Eq. 2 for one image's label sets (same shape), and the group of its DS."""
    if len(label_sets) < 2:
        raise ValueError(f"case {case}: the discriminator needs at least 2 label sets, got {len(label_sets)}")
    shapes = {np.shape(s) for s in label_sets}
    if len(shapes) != 1:
        raise ValueError(f"case {case}: label sets differ in shape: {sorted(shapes)}")
    dice = pairwise_dice(label_sets, **dice_kwargs)
    rs = reliability_scores(dice)
    real = most_reliable(rs)
    ds = difficulty_score(dice, real, provided)
    return CaseDifficulty(
        case=case,
        dice=tuple(tuple(float(v) for v in row) for row in dice),
        rs=tuple(float(v) for v in rs),
        real=real,
        ds=ds,
        group=difficulty_group(ds, easy, erroneous),
    )


def clean_labels(label: np.ndarray, valid: Iterable[int]) -> tuple[np.ndarray, int]:
    """Set values outside ``valid`` to background (CDL-UNet Sec. 2.1, data cleaning); returns ``(label, count)``."""
    label = np.asarray(label)
    bad = ~np.isin(label, np.asarray(sorted(set(int(v) for v in valid))))
    count = int(bad.sum())
    if count:
        label = label.copy()
        label[bad] = 0
    return label, count


# -- difficulty.csv ------------------------------------------------------------------------------


def difficulty_csv(rows: Sequence[CaseDifficulty], names: Sequence[str]) -> str:
    """``difficulty.csv`` text: one row per case (:data:`CSV_COLUMNS`, then RS and pairwise Dice per set)."""
    if not rows:
        raise ValueError("no cases to write")
    records = [r.row(names) for r in rows]
    return csv_text(records, list(records[0]), ".6f")


@dataclasses.dataclass(frozen=True)
class DifficultyTable:
    """What a data curriculum needs from ``difficulty.csv``: DS and group per case, in file order."""

    ds: Mapping[str, float]
    groups: Mapping[str, str]

    @classmethod
    def read(cls, path: str, easy: float | None = None, erroneous: float | None = None) -> DifficultyTable:
        """Read ``difficulty.csv``; with ``easy``/``erroneous`` given, regroup the cases by DS with them."""
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("case", "ds") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (write it with pgps difficulty)")
            rows = list(reader)
        if not rows:
            raise ValueError(f"{path}: no cases")
        ds, groups = {}, {}
        regroup = easy is not None or erroneous is not None
        easy = EASY_THRESHOLD if easy is None else easy
        erroneous = ERRONEOUS_THRESHOLD if erroneous is None else erroneous
        for line, row in enumerate(rows, start=2):
            case = row["case"]
            if case in ds:
                raise ValueError(f"{path}:{line}: case {case} appears twice")
            try:
                value = float(row["ds"])
            except ValueError:
                raise ValueError(f"{path}:{line}: ds {row['ds']!r} is not a number") from None
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{path}:{line}: ds {value} is outside [0, 1]")
            ds[case] = value
            if regroup or not row.get("group"):
                group = difficulty_group(value, easy, erroneous)
            else:
                group = row["group"]
                if group not in GROUPS:
                    raise ValueError(f"{path}:{line}: group {group!r} is not one of {', '.join(GROUPS)}")
            groups[case] = group
        return cls(ds, groups)

    def cases(self, group: str) -> list[str]:
        return [c for c, g in self.groups.items() if g == group]

    def ranked(self) -> list[str]:
        """Usable cases (not erroneous), easiest first: DS descending, ties by case name."""
        usable = [c for c, g in self.groups.items() if g != "erroneous"]
        return sorted(usable, key=lambda c: (-self.ds[c], c))
