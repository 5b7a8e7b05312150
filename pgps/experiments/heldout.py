"""Held-out predictions, ensembles and their scores for the experiment grid (torch-free: Snakemake builds its DAG
from this module).

A dataset may hold labelled cases that no fold trains on (``imagesTs``/``labelsTs``; ``pgps convert --format
amos22_task1|amos22_task2`` puts AMOS22's official validation cases there). Two configurations score them:

- an experiment with ``heldout: true``: every run's fold model predicts them (the AMOS22 large-batch study's
  Tables 1-3: one fold per setting);
- ``article.ensembles``: each member is a trained model (grid factors) predicting with the mean of its
  ``folds`` (``nnUNetv2_predict -f 0 1 2 3 4``); the members are ensembled with post-processing before or
  after (``pgps ensemble``; the study's Table 4). Members and ensemble are both scored.

A :class:`Model` is a grid run without its fold; its predictions, post-processing decision and scores live
under ``<nnunet_dir>/heldout``, ``postprocessing`` and ``heldout_ensembles``. :func:`evaluations` lists every
scored prediction as a manifest row (``pgps amos22-report`` reads them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pgps.experiments.grid import Run, check_run, dataset_folder, experiment_runs, grid_runs

AMOS22_TABLES = ("amos22_table1", "amos22_table2", "amos22_table3", "amos22_table4")
"""The AMOS22 study's tables (:mod:`pgps.report.amos22` renders them)."""


def amos22_outputs() -> list[str]:
    """The files ``pgps amos22-report`` writes, relative to its output folder (no pandas needed to list them)."""
    kinds = (("tables", ("csv", "md", "tex")), ("compare", ("csv", "md")))
    return [f"{kind}/{name}.{ext}" for name in AMOS22_TABLES for kind, exts in kinds for ext in exts]


EVALUATION_COLUMNS = (
    "name", "kind", "dataset", "mode", "loss", "patch_size", "batch_size", "folds", "order", "members", "scores",
)  # fmt: skip
"""Columns of the held-out manifest: what was scored (kind ``run``, ``model`` or ``ensemble``) and where its
score table (``pgps surface``: Dice and NSD per case and class) is."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A trained configuration of the grid (a :class:`~pgps.experiments.grid.Run`, any of its folds) predicting with
    ``folds``."""

    run: Run
    folds: tuple[int, ...]

    @property
    def folds_key(self) -> str:
        return "_".join(str(f) for f in self.folds)

    def model_dir(self, nnunet_dir: str, folder: str) -> str:
        r = self.run
        return f"{nnunet_dir}/{r.results_dir()}/{folder}/{r.trainer}__{r.plans}__{r.configuration}"

    def _key(self, folder: str) -> str:
        r = self.run
        return f"{r.results_dir()}/{folder}/{r.trainer}__{r.plans}__{r.configuration}/folds_{self.folds_key}"

    def prediction_dir(self, nnunet_dir: str, folder: str) -> str:
        return f"{nnunet_dir}/heldout/{self._key(folder)}"

    def postprocessing(self, nnunet_dir: str, folder: str) -> str:
        return f"{nnunet_dir}/postprocessing/{self._key(folder)}/postprocessing.pkl"


@dataclasses.dataclass(frozen=True)
class Ensemble:
    name: str
    dataset: str
    order: str
    members: tuple[tuple[str, Model], ...]

    def prediction_dir(self, nnunet_dir: str) -> str:
        return f"{nnunet_dir}/heldout_ensembles/{self.name}"

    def postprocessing(self, nnunet_dir: str) -> str:
        return f"{nnunet_dir}/postprocessing_ensembles/{self.name}/postprocessing.pkl"


def heldout_models(article: dict) -> list[Model]:
    """One single-fold model per run of every enabled experiment with ``heldout: true``."""
    models: dict[Model, None] = {}
    for name, experiment in article["experiments"].items():
        if experiment.get("enabled", True) and experiment.get("heldout"):
            try:
                runs = experiment_runs(experiment, article["datasets"])
                models.update(dict.fromkeys(Model(r, (r.fold,)) for r in runs))
            except ValueError as exc:
                raise ValueError(f"experiment {name!r}: {exc}") from None
    return list(models)


def _member_run(ensemble: str, member: str, spec: dict[str, Any], dataset: str, datasets: dict, fold: int) -> Run:
    if dataset not in datasets:
        raise ValueError(f"ensemble {ensemble!r}: dataset {dataset!r} is not in the config's datasets")
    mirroring = spec.get("mirroring")
    run = Run(
        dataset=dataset, backbone=spec.get("backbone", "unet"), mode=spec["mode"],
        sampler=spec.get("sampler", "default"),
        mirroring=datasets[dataset].get("mirroring", True) if mirroring is None else bool(mirroring),
        length=int(spec.get("length", 100)), fold=fold, seed=int(spec.get("seed", 0)), loss=spec.get("loss", "dice_ce"),
        patch_size=tuple(int(p) for p in spec["patch_size"]) if spec.get("patch_size") else None,
        batch_size=int(spec["batch_size"]) if spec.get("batch_size") else None,
    )  # fmt: skip
    try:
        return check_run(run)
    except ValueError as exc:
        raise ValueError(f"ensemble {ensemble!r}, member {member!r}: {exc}") from None


def ensembles(article: dict) -> list[Ensemble]:
    """The config's ensembles; every member must be trained on each of its folds by an enabled experiment."""
    trained = set(grid_runs(article))
    out = []
    for name, spec in (article.get("ensembles") or {}).items():
        folds = tuple(int(f) for f in spec.get("folds", (0, 1, 2, 3, 4)))
        members = []
        for member, factors in spec["members"].items():
            runs = [_member_run(name, member, factors, spec["dataset"], article["datasets"], f) for f in folds]
            missing = [r.fold for r in runs if r not in trained]
            if missing:
                raise ValueError(
                    f"ensemble {name!r}, member {member!r} ({runs[0].trainer}, {runs[0].configuration}): fold(s) "
                    f"{missing} are trained by no enabled experiment; add an experiment that trains them"
                )
            members.append((member, Model(runs[0], folds)))
        out.append(Ensemble(name, spec["dataset"], spec.get("order", "before"), tuple(members)))
    return out


def npz_runs(article: dict) -> set[Run]:
    """Runs whose final validation must keep probabilities (``--npz``): members of ensembles whose post-processing
    is decided on the ensemble of their cross-validation predictions (order ``after``)."""
    runs = set()
    for ensemble in ensembles(article):
        if ensemble.order == "after":
            for _, model in ensemble.members:
                runs.update(dataclasses.replace(model.run, fold=f) for f in model.folds)
    return runs


def _patch(run: Run) -> str:
    return "x".join(map(str, run.patch_size)) if run.patch_size else "planned"


def evaluations(article: dict, nnunet_dir: str) -> list[dict[str, Any]]:
    """Every scored held-out prediction as a manifest row (:data:`EVALUATION_COLUMNS`)."""
    rows: dict[str, dict] = {}

    def model_row(model: Model, kind: str, name: str) -> None:
        r = model.run
        folder = dataset_folder(article["datasets"][r.dataset])
        scores = f"{model.prediction_dir(nnunet_dir, folder)}.scores.csv"
        rows.setdefault(scores, {
            "name": name, "kind": kind, "dataset": r.dataset, "mode": r.mode, "loss": r.loss, "patch_size": _patch(r),
            "batch_size": r.batch_size or "planned", "folds": model.folds_key, "order": "", "members": "",
            "scores": scores,
        })  # fmt: skip

    for model in heldout_models(article):
        model_row(model, "run", f"{model.run.trainer}/{model.run.configuration}")
    for ensemble in ensembles(article):
        for member, model in ensemble.members:
            model_row(model, "model", f"{ensemble.name}:{member}")
        first = ensemble.members[0][1].run
        scores = f"{ensemble.prediction_dir(nnunet_dir)}.scores.csv"
        rows[scores] = {
            "name": ensemble.name, "kind": "ensemble", "dataset": ensemble.dataset, "mode": first.mode,
            "loss": "+".join(m.run.loss for _, m in ensemble.members), "patch_size": "", "batch_size": "",
            "folds": ensemble.members[0][1].folds_key, "order": ensemble.order,
            "members": "+".join(member for member, _ in ensemble.members), "scores": scores,
        }  # fmt: skip
    return list(rows.values())
