"""Is PGPS-Performance's data path ever slower than CPS's? CPU time per batch and per voxel, measured side by side.

For each preset of :data:`pgps.nnunet.datasets.synthdata.LOADER_PRESETS` (MSD-Hippocampus-like and
KiTS23-like volumes written in nnU-Net 2.8.1's preprocessed format), one run measures

- **CPS**: nnU-Net's own ``nnUNetDataLoader`` with ``nnUNetTrainer.get_training_transforms`` at
  ``P_max`` and ``b_base`` (33% forced foreground), the reference, and **cps-planned**, the loader the
  PGPS CPS trainer uses (:class:`pgps.nnunet.loading.sampling.PlannedDataLoader` with nnU-Net's sampling and
  transforms: every step from the core's batch plan), and
- at every stage of the PGPS-Performance schedule (patch ``P``, batch ``b``):
  **split-crop** and **single-crop**, the batched loader the PGPS trainers use
  (:mod:`pgps.nnunet.loading.batched`), and **before**, the same Split-Crop sampling with nnU-Net's
  per-sample transforms (the loader PGPS used before the batched path; ``--no-before`` skips it),

and prints CPU seconds per batch, nanoseconds per voxel (per ``b * numel(P)``) and the ratio of each
stage's per-voxel time to CPS's (<= 1: the stage's data path costs no more CPU per voxel than CPS).
Single-Crop needs ``b`` distinct cases: stages with larger batches print "n/a".

Method: one process, torch and BLAS on one thread (as in nnU-Net's loader workers), CPU time of
the process (``time.process_time``). The machine may be shared, so every loader runs a few batches
per round, round after round (interleaved); each gets about the voxels of ``--cps-batches`` CPS
batches per round. The cost of a batch depends mostly on how many of its patches the spatial
transform rotates or scales (probability 1 - 0.8^2 = 0.36 per patch, independently), a number
every batch reports; the per-batch mean is corrected with it as a control variate (least-squares
slope, known mean 0.36 b), which removes most of the sampling noise of small batches.

    .venv/bin/python benchmarks/loader.py                          # both presets (first run writes ~4.4 GB)
    .venv/bin/python benchmarks/loader.py --presets hippocampus --rounds 3 --json loader.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from machine import cpu_model, passive_openmp  # benchmarks/machine.py, next to this script
from threadpoolctl import threadpool_limits

import pgps
from pgps.nnunet.datasets.synthdata import LOADER_PRESETS, LoaderPreset, open_preprocessed, write_preprocessed
from pgps.sizes import fmt_size, numel

P_SPATIAL = 1 - (1 - 0.2) ** 2  # nnU-Net rotates with p 0.2 and scales with p 0.2, independently
DEFAULT_DATA = Path("/tmp/pgps-loader-bench")


def nnunet_augmentation(patch: tuple[int, ...]):
    """nnU-Net's rotation range, dummy-2D flag, enlarged crop and mirror axes for ``patch`` (its own code)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    stand_in = SimpleNamespace(configuration_manager=SimpleNamespace(patch_size=list(patch)),
                               print_to_log_file=lambda *a, **k: None)  # fmt: skip
    return nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(stand_in)


def deep_supervision_scales(strides: list[list[int]]) -> list[list[float]]:
    """nnU-Net's ``_get_deep_supervision_scales`` for these strides."""
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]


class SpatialCounter:
    """Counts the samples nnU-Net's SpatialTransform rotates or scales (its ``grid`` is not None)."""

    def __init__(self, transforms) -> None:
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

        self.count = 0
        spatial = next(t for t in transforms.transforms if isinstance(t, SpatialTransform))
        draw = spatial.get_parameters

        def counted(**data):
            params = draw(**data)
            self.count += params["grid"] is not None
            return params

        spatial.get_parameters = counted

    def take(self) -> int:
        n, self.count = self.count, 0
        return n


def warm_blur(transforms, patch: tuple[int, ...]) -> None:
    """Let nnU-Net's GaussianBlurTransform time FFT vs direct convolution for this patch before measuring."""
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform

    for t in transforms.transforms:
        blur = getattr(t, "transform", None)
        if isinstance(blur, GaussianBlurTransform):
            for sigma in (0.5, 0.75, 1.0):  # kernel sizes 3, 5 and 7
                blur._apply_to_image(torch.zeros(1, *patch), apply_to_channel=torch.ones(1, dtype=torch.bool),
                                     sigmas=[[sigma] * len(patch)])  # fmt: skip


class Loader:
    """One loader under test: its batches, voxels per batch and spatially transformed samples per batch."""

    def __init__(self, name: str, stage: int, patch, batch_size: int, loader, counter=None) -> None:
        self.name, self.stage, self.patch, self.batch_size = name, stage, tuple(patch), batch_size
        self.loader, self.counter = loader, counter
        self.voxels = batch_size * numel(patch)
        self.samples: list[tuple[float, float, int]] = []  # (cpu s, wall s, spatial samples)

    def batch(self) -> tuple[float, float, int]:
        cpu, wall = time.process_time(), time.perf_counter()
        self.loader.generate_train_batch()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if self.counter is not None:
            return cpu, wall, self.counter.take()
        return cpu, wall, int(self.loader.last_parameters.spatial.sum())

    def estimate(self) -> dict:
        """Mean CPU and wall seconds per batch, corrected with the spatial-sample count (control variate)."""
        cpu, wall, spatial = (np.array(v, dtype=float) for v in zip(*self.samples, strict=True))
        expected = P_SPATIAL * self.batch_size
        out = {"batches": len(cpu), "spatial_per_batch": float(spatial.mean()), "expected_spatial": expected}
        for key, values in (("cpu_s", cpu), ("wall_s", wall)):
            slope = np.polyfit(spatial, values, 1)[0] if spatial.std() > 0 else 0.0
            out[key] = float(values.mean() - slope * (spatial.mean() - expected))
            out[f"{key}_raw"] = float(values.mean())
        out["cpu_ns_per_voxel"] = out["cpu_s"] / self.voxels * 1e9
        return out


def build_loaders(preset: LoaderPreset, data, labels, strategies: list[str], before: bool) -> list[Loader]:
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from pgps.nnunet.loading.batched import AugmentationSpec
    from pgps.nnunet.loading.sampling import PlannedDataLoader

    ds = deep_supervision_scales(preset.strides)
    args = {"use_mask_for_norm": [False], "foreground_labels": labels.foreground_labels}

    def nnunet_transforms(patch, rotation, dummy_2d, mirror):
        transforms = nnUNetTrainer.get_training_transforms(patch, rotation, ds, mirror, dummy_2d, **args)
        warm_blur(transforms, patch)
        return transforms, SpatialCounter(transforms)

    rotation, dummy_2d, initial, mirror = nnunet_augmentation(preset.patch_size)
    transforms, counter = nnunet_transforms(preset.patch_size, rotation, dummy_2d, mirror)
    cps = nnUNetDataLoader(data, preset.batch_size, initial, preset.patch_size, labels,
                           oversample_foreground_percent=0.33, transforms=transforms)  # fmt: skip
    loaders = [Loader("cps", -1, preset.patch_size, preset.batch_size, cps, counter)]
    transforms, counter = nnunet_transforms(preset.patch_size, rotation, dummy_2d, mirror)
    planned = PlannedDataLoader.constant(data, preset.batch_size, initial, preset.patch_size, labels, strategy="nnunet",
                                         foreground_share=0.33, transforms=transforms)  # fmt: skip
    loaders.append(Loader("cps-planned", -1, preset.patch_size, preset.batch_size, planned, counter))
    schedule = pgps.make_schedule("performance", preset.patch_size, preset.steps, preset.batch_size)
    for index, stage in enumerate(schedule.stages):
        rotation, dummy_2d, initial, mirror = nnunet_augmentation(stage.patch_size)
        spec = AugmentationSpec.from_transform_args(stage.patch_size, rotation, ds, mirror, dummy_2d, **args)
        common = (data, stage.batch_size, initial, stage.patch_size, labels)
        for strategy in strategies:
            if strategy == "single_crop" and stage.batch_size > len(data.identifiers):
                continue
            loader = PlannedDataLoader.constant(*common, strategy=strategy, seed=10 * index + 1, augmentation=spec)
            loaders.append(Loader(strategy, index, stage.patch_size, stage.batch_size, loader))
        if before:
            transforms, counter = nnunet_transforms(stage.patch_size, rotation, dummy_2d, mirror)
            loader = PlannedDataLoader.constant(*common, strategy="split_crop", seed=10 * index + 2,
                                                transforms=transforms)  # fmt: skip
            loaders.append(Loader("before", index, stage.patch_size, stage.batch_size, loader, counter))
    return loaders


def run_preset(name: str, args) -> dict:
    preset = LOADER_PRESETS[name]
    folder = Path(args.data) / name
    start = time.perf_counter()
    write_preprocessed(preset, folder)
    print(f"[{name}] data in {folder} ({time.perf_counter() - start:.0f} s): {preset.description}", flush=True)
    data, labels = open_preprocessed(folder)
    loaders = build_loaders(preset, data, labels, args.strategies, args.before)
    budget = args.cps_batches * preset.batch_size * numel(preset.patch_size)
    for loader in loaders:  # warm-up: file caches, lazily built grids and kernels
        loader.batch()
    start = time.perf_counter()
    for r in range(args.rounds):
        for loader in loaders:
            for _ in range(max(1, math.ceil(budget / loader.voxels))):
                loader.samples.append(loader.batch())
        print(f"[{name}] round {r + 1}/{args.rounds} done ({time.perf_counter() - start:.0f} s)", flush=True)
    rows = [{"loader": ld.name, "stage": ld.stage, "patch_size": fmt_size(ld.patch), "batch_size": ld.batch_size,
             **ld.estimate()} for ld in loaders]  # fmt: skip
    cps = rows[0]["cpu_ns_per_voxel"]
    for row in rows:
        row["ratio"] = row["cpu_ns_per_voxel"] / cps
    return {"preset": name, "description": preset.description, "patch_size_max": fmt_size(preset.patch_size),
            "batch_size_base": preset.batch_size, "rows": rows}  # fmt: skip


def print_table(result: dict, strategies: list[str], before: bool) -> None:
    rows = result["rows"]
    cps = rows[0]
    print(f"\n{result['preset']}: {result['description']}")
    print(f"CPS (nnU-Net's loader + transforms, {cps['patch_size']} x {cps['batch_size']}): "
          f"{cps['cpu_s'] * 1e3:.1f} ms CPU per batch, {cps['cpu_ns_per_voxel']:.1f} ns per voxel "
          f"({cps['batches']} batches)")  # fmt: skip
    names = [*strategies, *(["before"] if before else [])]
    header = f"{'stage':>5} {'patch':>10} {'batch':>5}"
    for n in names:
        header += f" | {n + ' ms':>15} {'ns/vox':>7} {'ratio':>5}"
    print(header)
    planned = next(r for r in rows if r["loader"] == "cps-planned")
    print(f"CPS with pgps's loader (nnU-Net's sampling planned by the core, nnU-Net's transforms): "
          f"{planned['cpu_s'] * 1e3:.1f} ms CPU per batch, ratio {planned['ratio']:.2f}")  # fmt: skip
    by_stage: dict[int, dict[str, dict]] = {}
    for row in rows[1:]:
        if row["stage"] < 0:
            continue
        by_stage.setdefault(row["stage"], {})[row["loader"]] = row
    for stage, cells in sorted(by_stage.items()):
        first = next(iter(cells.values()))
        line = f"{stage:>5} {first['patch_size']:>10} {first['batch_size']:>5}"
        for n in names:
            c = cells.get(n)
            line += (f" | {c['cpu_s'] * 1e3:>15.1f} {c['cpu_ns_per_voxel']:>7.1f} {c['ratio']:>5.2f}" if c
                     else f" | {'n/a':>15} {'':>7} {'':>5}")  # fmt: skip
        print(line)
    for n in names:
        ratios = [r["ratio"] for r in rows[1:] if r["loader"] == n]
        if ratios:
            print(f"{n}: ratio to CPS per voxel, max {max(ratios):.2f}, median {np.median(ratios):.2f} "
                  f"over {len(ratios)} stages")  # fmt: skip


def main() -> int:
    passive_openmp()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(LOADER_PRESETS), choices=list(LOADER_PRESETS))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="where the synthetic preprocessed data live")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cps-batches", type=float, default=3.0, help="voxels per loader and round, in CPS batches")
    parser.add_argument("--strategies", nargs="+", default=["split_crop", "single_crop"])
    parser.add_argument("--no-before", dest="before", action="store_false", help="skip the per-sample PGPS loader")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with threadpool_limits(limits=1):
        for name in args.presets:
            results.append(run_preset(name, args))
    for result in results:
        print_table(result, args.strategies, args.before)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "threads": 1}
    print(f"\nmachine: {machine}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
