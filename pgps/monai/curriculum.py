"""MONAI's idiom for the curriculum: a multi-sample crop transform and a dataset of volumes it crops from.

:class:`CurriculumCropd` is a dictionary transform (keys in, keys out, a list of samples out, like
``RandCropByPosNegLabeld``) whose patch size, number of patches and forced-foreground patches come from
the :class:`~pgps.sampling.VolumeRequest` under ``request_key``, not from fixed arguments: the stage's
size, the batch strategy's patches per volume and the foreground share. Its randomness (which class, which
voxel, which random corner) is the core plan's, drawn from the request's own generator.

:class:`CurriculumDataset` answers the batch sampler's requests: it takes the volume from a MONAI
``Dataset``/``CacheDataset`` (loading and the deterministic transforms, cached once), crops it and runs
the random transforms on each patch with ``set_random_state`` seeded per (seed, step, volume, row), so that
batches do not depend on the number of workers or processes and a resumed run repeats them exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, apply_transform
from monai.transforms.traits import MultiSampleTrait
from torch.utils.data import Dataset

from pgps.sampling import VolumeRequest, VoxelLocations, generator
from pgps.torch.patches import CACHE_BYTES, LocationCache, crop_patches, resize

REQUEST_KEY = "pgps_request"


def _plain(value):
    """A MetaTensor's plain tensor (cropping a MetaTensor would track every slice); other values as they are."""
    return value.as_tensor() if hasattr(value, "as_tensor") else value


class CurriculumCropd(MapTransform, MultiSampleTrait):
    """Crop the patches that ``data[request_key]`` (a :class:`~pgps.sampling.VolumeRequest`) asks for.

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
        request = d.pop(self.request_key)
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


class CurriculumDataset(Dataset):
    """The patches of a :class:`pgps.torch.CurriculumBatchSampler`'s requests, cropped from MONAI data.

    ``data[i]`` is case ``i`` as a dict of whole volumes (a MONAI ``Dataset``/``CacheDataset`` whose
    transform loads and prepares it, e.g. ``LoadImaged``, ``EnsureChannelFirstd``, intensity scaling,
    ``ClassesToIndicesd``). ``crop`` cuts the patches (default: ``image`` and ``label``); ``transform``
    (e.g. ``RandFlipd``, ``RandGaussianNoised``) runs on each patch, its random state set per patch.
    Use with ``monai.data.DataLoader(dataset, batch_sampler=sampler)``: a step's patches arrive as one
    list in the order of the global batch, which MONAI's ``list_data_collate`` stacks.
    """

    def __init__(
        self,
        data: Sequence,
        crop: CurriculumCropd | None = None,
        transform=None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.data = data
        self.crop = CurriculumCropd(keys=("image", "label")) if crop is None else crop
        self.transform = transform
        self.locations = LocationCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, request: VolumeRequest) -> list[dict]:
        if not isinstance(request, VolumeRequest):
            raise TypeError(
                f"CurriculumDataset is indexed by the requests of a CurriculumBatchSampler, got "
                f"{type(request).__name__}; use monai.data.DataLoader(dataset, batch_sampler=sampler)"
            )
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
                rng = generator(request.seed, request.step, request.slot, patch["pgps_row"])
                self.transform.set_random_state(seed=int(rng.integers(2**32)))
            out.append(apply_transform(self.transform, patch))
        return out

    def __getitems__(self, requests: list[VolumeRequest]) -> list[dict]:
        """A step's patches from all its volumes, in the order of the global batch's rows."""
        patches = [p for request in requests for p in self[request]]
        return sorted(patches, key=lambda p: p["pgps_row"])
