"""Data-level curriculum: which training cases each epoch may draw, easiest first.

The cases are ranked once from ``difficulty.csv`` (:class:`pgps.data.difficulty.DifficultyTable`):
easy before hard, each group by Difficulty Score descending; erroneous cases are left out. A
*pacing function* gives the number of ranked cases ``n(e)`` that epoch ``e`` (0-based) may draw;
the cases are the first ``n(e)`` of the ranking. Like :class:`pgps.Schedule`, the whole data
schedule is computed up front, prints as a table, serializes, and a :class:`DataCurriculum`
holds the position of a run so that a checkpoint resumes in the same phase.

Pacing functions (``kind``):

- ``easy_then_hard``: CDL-UNet's two phases (Wang et al., FLARE 2024, Sec. 2.2.1, Table 2):
  the easy cases for the first ``easy_fraction`` of the epochs, then easy + hard cases. The
  default 0.4 is the paper's 1000 easy-course epochs of 1000 + 1500.
- ``linear`` and ``root``: competence-based pacing (Platanios et al., NAACL 2019, linear and p-root competence):
  ``c(t) = min(1, t (1 - c0) / T + c0)`` and ``c(t) = min(1, (t (1 - c0^p) / T + c0^p)^(1/p))``,
  ``t`` the epoch, ``T = length * epochs``, ``c0 = start``, ``p = degree`` (2: square root).
- ``exponential``: fixed exponential pacing (Hacohen & Weinshall, ICML 2019):
  ``g(t) = min(start * increase^floor(t / step_length), 1)`` with ``step_length`` in epochs.
- ``fixed_linear``, ``fixed_root``, ``fixed_discrete``: DeepSpeed's curriculum schedule types
  (``deepspeed/runtime/data_pipeline/curriculum_scheduler.py``) with the *number of cases* as
  the difficulty: ``d(s) = floor((s / total_epochs)^(1 / degree) (max - min) + min)`` rounded
  down to a multiple of ``step`` and capped at ``max`` (``fixed_linear``: degree 1), evaluated
  as DeepSpeed's engine evaluates it, at ``s = t + 1`` (``update_difficulty(global_steps + 1)``):
  a run whose ``total_epochs`` is its epochs trains on all usable cases in its last epoch;
  ``fixed_discrete``: ``difficulty[i]`` cases while ``t < max_epoch[i]`` (``s <= max_epoch[i]``,
  as DeepSpeed), the last one after.
- ``none``: every usable case from the first epoch (a data curriculum that only drops the
  erroneous cases).

Fractions are of the usable cases and rounded up (at least one case). Epochs count from 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pgps.data.difficulty import DifficultyTable

DEFAULTS: dict[str, dict[str, Any]] = {
    "easy_then_hard": {"easy_fraction": 0.4},
    "linear": {"start": 0.33, "length": 1.0},
    "root": {"start": 0.33, "length": 1.0, "degree": 2},
    "exponential": {"start": 0.1, "increase": 1.9, "step_length": None},
    "fixed_linear": {"min_cases": 1, "max_cases": None, "total_epochs": None, "step": 1},
    "fixed_root": {"min_cases": 1, "max_cases": None, "total_epochs": None, "step": 1, "degree": 2},
    "fixed_discrete": {"difficulty": None, "max_epoch": None},
    "none": {},
}
"""Pacing kinds and their parameters' defaults. ``None`` means: derived from the run
(``length``/``total_epochs``: the epochs; ``step_length``: a tenth of them; ``max_cases``: all
usable cases). Where each default comes from: :data:`DEFAULT_SOURCES`."""

DEFAULT_SOURCES: dict[str, str] = {
    "easy_then_hard": "easy_fraction 0.4 = 1000 / (1000 + 1500) epochs, CDL-UNet Table 2",
    "linear": "start 0.33 and length 1.0: ours (Platanios et al. set the initial competence c0 and the curriculum "
    "length T per task; we start with a third of the cases and reach all of them at the last epoch)",
    "root": "degree 2 (square root), Platanios et al.'s root competence; start and length as for linear",
    "exponential": "start 0.1, increase 1.9, step_length a tenth of the epochs: ours (Hacohen & Weinshall tune "
    "starting_percent, inc and step_length per dataset)",
    "fixed_linear": "DeepSpeed's fixed_linear; min 1 case, max all usable cases, total_epochs = the run's epochs",
    "fixed_root": "DeepSpeed's fixed_root with root_degree 2 (its documented example)",
    "fixed_discrete": "DeepSpeed's fixed_discrete: give difficulty (cases) and max_epoch lists",
    "none": "no pacing",
}
"""Where each default comes from (printed by the trainers and docs/pages/how-to/cdl.md)."""

DISCRETE = ("easy_then_hard", "fixed_discrete", "none")
"""Kinds with a few long phases: the only ones where restarting the learning rate at a phase switch makes sense."""


def _fraction(name: str, value: float, low_open: bool = True) -> float:
    value = float(value)
    if not (math.isfinite(value) and (0 < value <= 1 if low_open else 0 <= value <= 1)):
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def pacing_counts(
    kind: str, epochs: int, num_easy: int, num_usable: int, params: Mapping[str, Any] | None = None
) -> list[int]:
    """``n(e)`` for every epoch ``e`` in ``0..epochs-1``: how many ranked cases it may draw.

    ``num_easy`` is the size of the easy group (first in the ranking), ``num_usable`` the ranked
    (non-erroneous) cases. Unknown parameters and out-of-range values raise ``ValueError``.
    """
    if kind not in DEFAULTS:
        raise ValueError(f"unknown data pacing {kind!r}; choose one of {', '.join(DEFAULTS)}")
    _positive_int("epochs", epochs)
    if num_usable < 1:
        raise ValueError("no usable cases: every case of difficulty.csv is erroneous (lower the thresholds)")
    unknown = sorted(set(params or {}) - set(DEFAULTS[kind]))
    if unknown:
        raise ValueError(f"{kind} pacing has no parameter(s) {', '.join(unknown)}; it takes {sorted(DEFAULTS[kind])}")
    p = {**DEFAULTS[kind], **(params or {})}

    def of_fraction(c: float) -> int:
        return max(1, min(num_usable, math.ceil(round(c * num_usable, 9))))

    if kind == "none":
        return [num_usable] * epochs
    if kind == "easy_then_hard":
        if num_easy < 1:
            raise ValueError("easy_then_hard pacing needs at least one easy case (raise the easy threshold)")
        first = round(_fraction("easy_fraction", p["easy_fraction"], low_open=False) * epochs)
        return [num_easy if e < first else num_usable for e in range(epochs)]
    if kind in ("linear", "root"):
        c0 = _fraction("start", p["start"])
        horizon = _fraction("length", p["length"]) * epochs
        degree = 1 if kind == "linear" else float(p["degree"])
        if degree < 1:
            raise ValueError(f"root pacing degree must be >= 1, got {degree}")
        return [of_fraction(min(1.0, (e * (1 - c0**degree) / horizon + c0**degree) ** (1 / degree)))
                for e in range(epochs)]  # fmt: skip
    if kind == "exponential":
        c0 = _fraction("start", p["start"])
        increase = float(p["increase"])
        if not increase > 1:
            raise ValueError(f"exponential pacing increase must be > 1, got {increase}")
        length = _positive_int("step_length", p["step_length"] or max(1, epochs // 10))
        return [of_fraction(min(c0 * increase ** (e // length), 1.0)) for e in range(epochs)]
    if kind in ("fixed_linear", "fixed_root"):
        lo = _positive_int("min_cases", p["min_cases"])
        hi = _positive_int("max_cases", p["max_cases"] or num_usable)
        if not lo <= hi <= num_usable:
            raise ValueError(f"need 1 <= min_cases ({lo}) <= max_cases ({hi}) <= usable cases ({num_usable})")
        total = _positive_int("total_epochs", p["total_epochs"] or epochs)
        step = _positive_int("step", p["step"])
        degree = 1.0 if kind == "fixed_linear" else float(p["degree"])
        if degree <= 0:
            raise ValueError(f"fixed_root degree must be positive, got {degree}")
        counts = []
        for e in range(epochs):
            d = math.floor(min((e + 1) / total, 1.0) ** (1 / degree) * (hi - lo) + lo)  # DeepSpeed's step e + 1
            counts.append(max(lo, min(d - d % step, hi)))
        return counts
    # fixed_discrete
    difficulty, max_epoch = p["difficulty"], p["max_epoch"]
    if difficulty is None or max_epoch is None:
        raise ValueError("fixed_discrete pacing needs difficulty (cases per phase) and max_epoch (phase ends)")
    difficulty = [_positive_int("difficulty", d) for d in difficulty]
    max_epoch = [_positive_int("max_epoch", m) for m in max_epoch]
    if len(max_epoch) != len(difficulty) - 1:
        raise ValueError(f"fixed_discrete needs one max_epoch fewer than difficulty, got {len(max_epoch)} and "
                         f"{len(difficulty)}")  # fmt: skip
    if max_epoch != sorted(set(max_epoch)) or max(difficulty) > num_usable:
        raise ValueError(f"fixed_discrete max_epoch must increase and difficulty must not exceed the {num_usable} "
                         f"usable cases, got {max_epoch} and {difficulty}")  # fmt: skip
    return [difficulty[sum(e >= m for m in max_epoch)] for e in range(epochs)]


def rank_cases(table: DifficultyTable) -> tuple[list[str], int]:
    """``(ranking, number of easy cases)``: easy cases then hard ones, each by DS descending (ties by name)."""
    key = lambda c: (-table.ds[c], c)  # noqa: E731
    easy = sorted(table.cases("easy"), key=key)
    hard = sorted(table.cases("hard"), key=key)
    return easy + hard, len(easy)


@dataclasses.dataclass(frozen=True)
class Phase:
    """Consecutive epochs ``[start, stop)`` that draw the first ``num_cases`` ranked cases."""

    index: int
    start: int
    stop: int
    num_cases: int

    @property
    def epochs(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass(frozen=True)
class DataSchedule:
    """The data curriculum of a run: the ranking, and ``n(e)`` for every epoch."""

    kind: str
    params: tuple[tuple[str, Any], ...]
    order: tuple[str, ...]
    num_easy: int
    counts: tuple[int, ...]

    @property
    def epochs(self) -> int:
        return len(self.counts)

    @property
    def phases(self) -> list[Phase]:
        out: list[Phase] = []
        for e, n in enumerate(self.counts):
            if out and out[-1].num_cases == n:
                out[-1] = dataclasses.replace(out[-1], stop=e + 1)
            else:
                out.append(Phase(len(out), e, e + 1, n))
        return out

    def phase_index(self, epoch: int) -> int:
        """Index of the phase that trains ``epoch`` (epochs past the end stay in the last phase)."""
        epoch = min(max(int(epoch), 0), self.epochs - 1)
        return next(p.index for p in self.phases if p.start <= epoch < p.stop)

    def cases_at(self, epoch: int) -> list[str]:
        """The cases epoch ``epoch`` may draw (past the end: the last epoch's)."""
        return list(self.order[: self.counts[min(max(int(epoch), 0), self.epochs - 1)]])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": dict(self.params), "order": list(self.order), "num_easy": self.num_easy,
                "counts": list(self.counts)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSchedule:
        return cls(d["kind"], _frozen(d["params"]), tuple(d["order"]), int(d["num_easy"]), tuple(d["counts"]))

    def table(self) -> str:
        """One line per phase: epochs and the cases it may draw."""
        lines = [f"data curriculum {self.kind} ({_describe(self.params)}): {len(self.order)} usable cases, "
                 f"{self.num_easy} easy"]  # fmt: skip
        for p in self.phases:
            shown = ", ".join(self.order[: min(p.num_cases, 4)]) + (", ..." if p.num_cases > 4 else "")
            lines.append(f"  phase {p.index}: epochs {p.start}-{p.stop - 1} ({p.epochs}), {p.num_cases} cases: {shown}")
        return "\n".join(lines)


def _frozen(params: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (params or {}).items()))


def _describe(params: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params) or "defaults"


def make_data_schedule(
    table: DifficultyTable, kind: str = "easy_then_hard", epochs: int = 1000, params: Mapping[str, Any] | None = None
) -> DataSchedule:
    """The data schedule of ``epochs`` epochs over the cases of ``table`` with pacing ``kind``."""
    order, num_easy = rank_cases(table)
    counts = pacing_counts(kind, epochs, num_easy, len(order), params)
    return DataSchedule(kind, _frozen(params), tuple(order), num_easy, tuple(counts))


class DataCurriculum:
    """A :class:`DataSchedule` plus the epoch a run is at; its state goes into the checkpoint."""

    def __init__(self, schedule: DataSchedule, epoch: int = 0) -> None:
        self.schedule = schedule
        self.epoch = epoch

    @property
    def phase(self) -> Phase:
        return self.schedule.phases[self.schedule.phase_index(self.epoch)]

    @property
    def cases(self) -> list[str]:
        return self.schedule.cases_at(self.epoch)

    def step(self) -> None:
        """Advance by one epoch."""
        self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = DataSchedule.from_dict(state["schedule"])
        if saved != self.schedule:
            raise ValueError(
                "the checkpoint was saved with a different data curriculum (difficulty.csv, pacing or epochs "
                f"changed); resume with the same ones.\nsaved:\n{saved.table()}\ncurrent:\n{self.schedule.table()}"
            )
        self.epoch = int(state["epoch"])

    def __repr__(self) -> str:
        return f"DataCurriculum(kind={self.schedule.kind!r}, epoch={self.epoch}, phase={self.phase.index})"


def restart_epoch(schedule: DataSchedule, epoch: int) -> tuple[int, int]:
    """``(epochs since the phase began, epochs of the phase)``: the poly learning-rate clock when it
    restarts at every phase switch (CDL-UNet trains its hard course as a new run from the easy
    course's weights)."""
    if schedule.kind not in DISCRETE:
        raise ValueError(f"a learning-rate restart needs a phased pacing ({', '.join(DISCRETE)}), not {schedule.kind}")
    phase = schedule.phases[schedule.phase_index(epoch)]
    return epoch - phase.start, phase.epochs


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values as JSON where they parse, e.g. ``difficulty=[4,8]``) as a dict."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"pacing parameter {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
