"""MONAI's idiom for the curriculum: a multi-sample crop transform and a dataset of volumes it crops from.

:class:`CurriculumCropd` is a dictionary transform (keys in, keys out, a list of samples out, like
``RandCropByPosNegLabeld``) whose patch size, number of patches and forced-foreground patches come from
the step's :class:`~pgps.sampling.VolumeRequest`, not from fixed arguments: the stage's size, the batch
strategy's patches per volume and the foreground share. Its randomness (which class, which voxel, which
random corner) is the core plan's, drawn from the request's own generator.

It stands in a ``Compose`` where ``RandCropByPosNegLabeld`` would, inside a ``Dataset``/``CacheDataset``/
``PersistentDataset`` (it is random: a cache keeps the transforms before it). What MONAI's random crops do
not need is the step: a ``DataLoader`` hands a dataset an index, and a curriculum's batch is a step of the
schedule. :class:`CurriculumDataset` wraps the dataset and answers the batch sampler's requests: it asks the
dataset for the request's volume with the request set where the crop finds it (a context variable of the
process, so it works with any number of workers), seeds the dataset's random transforms per (seed, step,
volume) and keeps this rank's patches. Batches are therefore the same with any number of workers or ranks,
and a resumed run repeats them exactly. Without the wrapper the crop stops with the line to write.
"""

from __future__ import annotations

import contextvars
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, Randomizable, apply_transform
from monai.transforms.traits import MultiSampleTrait, RandomizableTrait
from torch.utils.data import Dataset

from pgps.sampling import VolumeRequest, VoxelLocations
from pgps.torch.patches import CACHE_BYTES, LocationCache, crop_patches, resize

REQUEST_KEY = "pgps_request"
CURRENT_REQUEST: contextvars.ContextVar[VolumeRequest | None] = contextvars.ContextVar("pgps_request", default=None)
"""The request of the volume that :class:`CurriculumDataset` is asking its dataset for (this process and thread)."""
WRAP_FIX = (
    "DataLoader(pgps.monai.CurriculumDataset(dataset), batch_sampler=pgps.monai.CurriculumBatchSampler(schedule, "
    "num_cases=len(dataset)), collate_fn=list_data_collate)"
)


def _plain(value):
    """A MetaTensor's plain tensor (cropping a MetaTensor would track every slice); other values as they are."""
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class CurriculumCropd(MapTransform, RandomizableTrait, MultiSampleTrait):
    """Crop the patches that the step's :class:`~pgps.sampling.VolumeRequest` asks for: the one
    :class:`CurriculumDataset` is asking the dataset for, or ``data[request_key]``.

    Returns one dict per patch: ``keys`` cropped to the stage's patch size (zero padding outside the
    volume; Progressive Resolution: the ``P_max`` crop resized, ``label_key`` nearest neighbour), every
    other entry of ``data`` carried over, and ``pgps_row``, ``pgps_case``, ``pgps_forced``,
    ``pgps_fg_fallback``, ``pgps_step``, ``pgps_stage``. A forced patch is centred on a voxel of a class
    drawn uniformly among the foreground classes present in ``label_key`` (``(1, X, Y, Z)``, 0 =
    background); ``indices_key`` reads the class indices that MONAI's ``ClassesToIndicesd`` cached instead
    of finding them (its index 0, the background, is skipped).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: Hashable = "label",
        request_key: Hashable = REQUEST_KEY,
        indices_key: Hashable | None = None,
        pad_value: float = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.request_key = request_key
        self.indices_key = indices_key
        self.pad_value = pad_value

    def __call__(self, data: Mapping[Hashable, Any], locations: Mapping | None = None) -> list[dict[Hashable, Any]]:
        """``locations``: the label's voxels per foreground class, when the caller keeps them (else found here)."""
        d = dict(data)
        request = d.pop(self.request_key, None) or CURRENT_REQUEST.get()
        if request is None:
            raise RuntimeError(
                "CurriculumCropd crops the patches of a step of the curriculum, which the DataLoader's index does not "
                f"name: wrap the dataset whose transform holds it and give the DataLoader the curriculum's batch "
                f"sampler, {WRAP_FIX}"
            )
        label = _plain(d[self.label_key])
        shape = tuple(label.shape[1:])
        if not any(request.forced):
            foreground: Sequence | Mapping = ()
        elif self.indices_key is not None:
            foreground = [VoxelLocations(np.asarray(i), shape) for i in list(d[self.indices_key])[1:]]
        else:
            foreground = LocationCache(0).get(request.case, label) if locations is None else locations
        corners, fell_back = request.corners(shape, foreground)
        crops = {}
        for key in self.key_iterator(d):
            crop = crop_patches(_plain(d[key]), corners, request.crop_size, self.pad_value)
            crops[key] = resize(crop, request.patch_size, nearest=key == self.label_key)  # Progressive Resolution
        kept = {k: v for k, v in d.items() if k not in crops and k != self.indices_key}
        forced = np.asarray(request.forced)[list(request.take)]
        return [
            {
                **kept,
                **{k: v[j] for k, v in crops.items()},
                "pgps_row": int(row),
                "pgps_case": request.case,
                "pgps_forced": bool(forced[j]),
                "pgps_fg_fallback": bool(fell_back[j]),
                "pgps_step": request.step,
                "pgps_stage": request.stage_index,
            }
            for j, row in enumerate(request.taken_rows.tolist())
        ]


def curriculum_crops(transform) -> list[CurriculumCropd]:
    """The :class:`CurriculumCropd` transforms of a dataset's ``transform`` (a ``Compose``, nested ones too)."""
    if isinstance(transform, Compose):
        return [t for t in transform.flatten().transforms if isinstance(t, CurriculumCropd)]
    return [transform] if isinstance(transform, CurriculumCropd) else []


class CurriculumDataset(Dataset):
    """The patches of a :class:`pgps.torch.CurriculumBatchSampler`'s requests, cropped from MONAI data.

    ``data[i]`` is case ``i``. Two ways:

    - ``CurriculumDataset(dataset)``, where the dataset's transform (a ``Compose``) holds a
      :class:`CurriculumCropd`, as ``RandCropByPosNegLabeld`` would stand, e.g. ``CacheDataset(files,
      Compose([LoadImaged(keys), EnsureChannelFirstd(keys), ClassesToIndicesd(...), CurriculumCropd(keys, ...),
      RandFlipd(keys, ...)]))``: the dataset gives the request's volume cropped and augmented; its random
      transforms are seeded per (seed, step, volume), the volume's patches are cropped for every rank and this
      rank's are kept.
    - ``CurriculumDataset(volumes, crop, transform)``: ``volumes[i]`` is a dict of whole volumes (loading and
      the deterministic transforms, e.g. ``LoadImaged``, ``EnsureChannelFirstd``, ``ClassesToIndicesd``);
      ``crop`` cuts the patches (default: ``image`` and ``label``); ``transform`` (e.g. ``RandFlipd``,
      ``RandGaussianNoised``) runs on each patch, its random state set per (seed, step, volume, row).

    Use with a ``DataLoader`` (``monai.data.DataLoader``, or torchdata's ``StatefulDataLoader`` with
    ``collate_fn=list_data_collate`` to checkpoint it) and ``batch_sampler=sampler``: a step's patches arrive as
    one list in the order of the global batch, which ``list_data_collate`` stacks.
    """

    def __init__(
        self,
        data: Sequence,
        crop: CurriculumCropd | None = None,
        transform=None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        inside = curriculum_crops(getattr(data, "transform", None))
        if len(inside) > 1:
            raise ValueError(f"the dataset's transform holds {len(inside)} CurriculumCropd transforms; give it one")
        if inside and (crop is not None or transform is not None):
            raise ValueError(
                "the dataset's transform already crops with CurriculumCropd: give CurriculumDataset(dataset) alone "
                "(the transforms after the crop in its Compose augment the patches)"
            )
        self.data = data
        self.inside = bool(inside)
        self.crop = None if self.inside else CurriculumCropd(keys=("image", "label")) if crop is None else crop
        self.transform = transform
        self.locations = LocationCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, request: VolumeRequest) -> list[dict]:
        if not isinstance(request, VolumeRequest):
            raise TypeError(
                f"CurriculumDataset is indexed by the requests of a CurriculumBatchSampler, got "
                f"{type(request).__name__}; use {WRAP_FIX}"
            )
        if self.inside:
            return self._from_dataset(request)
        item = self.data[request.case]
        if not isinstance(item, Mapping):
            raise TypeError(f"case {request.case}: expected a dict of volumes, got {type(item).__name__}")
        locations = None
        if any(request.forced) and self.crop.indices_key is None:
            locations = self.locations.get(request.case, _plain(item[self.crop.label_key]))
        patches = self.crop({**item, self.crop.request_key: request}, locations)
        if self.transform is None:
            return patches
        out = []
        for patch in patches:
            if isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=request.augmentation_seed(patch["pgps_row"]))
            out.append(apply_transform(self.transform, patch))
        return out

    def _from_dataset(self, request: VolumeRequest) -> list[dict]:
        """The request's patches from the dataset whose transform crops them: every rank's patches of the volume
        cropped and augmented in one seeded sequence (as on one process), this rank's kept."""
        if isinstance(self.data.transform, Randomizable):
            self.data.transform.set_random_state(seed=request.augmentation_seed())
        token = CURRENT_REQUEST.set(request.every_row())
        try:
            patches = self.data[request.case]
        finally:
            CURRENT_REQUEST.reset(token)
        patches = [patches] if isinstance(patches, Mapping) else list(patches)
        keep = set(request.taken_rows.tolist())
        return [p for p in patches if int(p["pgps_row"]) in keep]

    def __getitems__(self, requests: list[VolumeRequest]) -> list[dict]:
        """A step's patches from all its volumes, in the order of the global batch's rows."""
        patches = [p for request in requests for p in self[request]]
        return sorted(patches, key=lambda p: int(p["pgps_row"]))
