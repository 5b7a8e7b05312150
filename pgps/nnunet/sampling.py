"""Batch construction for large small-patch batches (journal Appendix A), as an nnU-Net loader.

Strategies, for a batch of ``b`` patches with a fixed foreground share (50% by default):

- ``split_crop`` (PGPS-Performance's default): two volumes; every foreground patch comes from
  one, every random patch from the other.
- ``single_crop``: ``b`` distinct volumes, one patch each (nnU-Net's own scheme).
- ``multi_crop``: two volumes, each giving half of the foreground and half of the random patches.
- ``single_volume``: every patch from one volume.

Sample ``j`` is a forced-foreground patch when ``j >= round(b * (1 - share))``, nnU-Net's rule.
A foreground patch picks a class uniformly among the foreground classes present in the volume,
then a voxel of that class uniformly, and centres the patch there, clamped to the padded volume;
a random patch is uniform over the valid positions. A volume without foreground falls back to
a random patch and is counted (``batch["pgps_fg_fallbacks"]``). Each volume is opened once per
batch; nnU-Net's blosc2 arrays then read only the chunks that a crop touches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from threadpoolctl import threadpool_limits

VOLUMES_NEEDED = {"split_crop": 2, "multi_crop": 2, "single_volume": 1, "single_crop": None}
STRATEGIES = tuple(VOLUMES_NEEDED)


def check_strategy(strategy: str, batch_size: int, num_cases: int) -> None:
    """Raise ``ValueError`` when ``strategy`` is unknown or cannot build a batch of ``batch_size``."""
    if strategy not in VOLUMES_NEEDED:
        raise ValueError(f"unknown batch sampling strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    needed = batch_size if strategy == "single_crop" else VOLUMES_NEEDED[strategy]
    if needed > num_cases:
        raise ValueError(
            f"the {strategy} strategy needs {needed} distinct training cases for a batch of {batch_size} "
            f"patches, but the training split has only {num_cases}"
        )


def forced_foreground(batch_size: int, share: float) -> np.ndarray:
    """Which samples of a batch must contain foreground (nnU-Net's last-``share`` rule)."""
    return np.arange(batch_size) >= round(batch_size * (1 - share))


class PGPSDataLoader(nnUNetDataLoader):
    """``nnUNetDataLoader`` with the PGPS batch strategies and a seeded, checkpointable generator.

    ``patch_size`` is the (enlarged) crop before the spatial transform and ``final_patch_size``
    the network input, exactly as in ``nnUNetDataLoader``.
    """

    def __init__(
        self,
        data,
        batch_size: int,
        patch_size: Sequence[int],
        final_patch_size: Sequence[int],
        label_manager,
        *,
        strategy: str = "split_crop",
        foreground_share: float = 0.5,
        seed: int | Sequence[int] = 0,
        transforms=None,
    ) -> None:
        check_strategy(strategy, batch_size, len(data.identifiers))
        if not 0 <= foreground_share <= 1:
            raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share}")
        super().__init__(
            data,
            batch_size,
            patch_size,
            final_patch_size,
            label_manager,
            oversample_foreground_percent=foreground_share,
            transforms=transforms,
        )
        self.strategy = strategy
        self.rng = np.random.default_rng(seed)
        self.forced = forced_foreground(batch_size, foreground_share)

    # -- which volume and which kind of patch for every sample ---------------------------------
    def plan_batch(self) -> list[tuple[str, bool]]:
        """``(case identifier, forced foreground)`` for every sample of the next batch."""
        keys, b, forced = self.indices, self.batch_size, self.forced
        if self.strategy == "single_crop":
            chosen = self.rng.choice(len(keys), size=b, replace=False)
            return [(keys[i], bool(f)) for i, f in zip(chosen, forced, strict=True)]
        if self.strategy == "single_volume":
            key = keys[self.rng.integers(len(keys))]
            return [(key, bool(f)) for f in forced]
        first, second = (keys[i] for i in self.rng.choice(len(keys), size=2, replace=False))
        if self.strategy == "split_crop":
            return [(second if f else first, bool(f)) for f in forced]
        # multi_crop: alternate the volumes within the random and within the foreground samples
        plan, seen = [], {False: 0, True: 0}
        for f in forced:
            f = bool(f)
            plan.append((first if seen[f] % 2 == 0 else second, f))
            seen[f] += 1
        return plan

    # -- where to crop ---------------------------------------------------------------------------
    def _bounds(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        patch = np.asarray(self.patch_size)
        need = np.maximum(self.need_to_pad, patch - np.asarray(shape))
        lower = -(need // 2)
        upper = np.asarray(shape) + need // 2 + need % 2 - patch
        return lower, upper

    def crop_box(self, shape: Sequence[int], force_fg: bool, class_locations: dict | None) -> tuple[list, bool]:
        """Lower corner of the crop (``self.patch_size``) and whether a foreground patch fell back to random."""
        lower, upper = self._bounds(shape)
        select = None
        if force_fg or self.has_ignore:
            locations = class_locations or {}
            if force_fg:
                eligible = [k for k, v in locations.items() if len(v) > 0 and k != self.annotated_classes_key]
            else:  # ignore label: random patches still need annotated voxels
                eligible = [self.annotated_classes_key] if len(locations.get(self.annotated_classes_key, ())) else []
            if eligible:
                select = locations[eligible[self.rng.integers(len(eligible))]]
        if select is None:
            corner = self.rng.integers(lower, upper + 1)
            return corner.tolist(), force_fg
        voxel = np.asarray(select[self.rng.integers(len(select))])[1:]
        corner = np.clip(voxel - np.asarray(self.patch_size) // 2, lower, upper)
        return corner.tolist(), False

    # -- the batch -------------------------------------------------------------------------------
    def generate_train_batch(self) -> dict:
        plan = self.plan_batch()
        cases = {key: self._data.load_case(key) for key in dict.fromkeys(k for k, _ in plan)}
        data_all = seg_all = None
        fallbacks = 0
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for j, (key, force_fg) in enumerate(plan):
                data, seg, seg_prev, properties = cases[key]
                corner, fell_back = self.crop_box(data.shape[1:], force_fg, properties.get("class_locations"))
                fallbacks += fell_back
                bbox = [[c, c + p] for c, p in zip(corner, self.patch_size, strict=True)]
                image = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                target = torch.from_numpy(crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)).to(torch.int16)
                if seg_prev is not None:
                    prev = crop_and_pad_nd(seg_prev, bbox, -1, cast_cropped_to=np.int16)
                    target = torch.cat((target, torch.from_numpy(prev).to(torch.int16)[None]), dim=0)
                if self.transforms is not None:
                    out = self.transforms(image=image, segmentation=target)
                    image, target = out["image"], out["segmentation"]
                if data_all is None:
                    data_all = torch.empty((self.batch_size, *image.shape), dtype=torch.float32)
                    if isinstance(target, list):
                        seg_all = [torch.empty((self.batch_size, *t.shape), dtype=t.dtype) for t in target]
                    else:
                        seg_all = torch.empty((self.batch_size, *target.shape), dtype=target.dtype)
                data_all[j] = image
                if isinstance(target, list):
                    for level, t in enumerate(target):
                        seg_all[level][j] = t
                else:
                    seg_all[j] = target
        return {"data": data_all, "target": seg_all, "keys": [k for k, _ in plan], "pgps_fg_fallbacks": fallbacks}
