"""The PGPS curriculum in a MONAI training loop (needs ``pip install 'pgps[monai]'``; never imports nnU-Net).

A MONAI pipeline as usual, :class:`CurriculumCropd` in the ``Compose`` where ``RandCropByPosNegLabeld`` would
stand (stage patch size, number of patches per volume and forced-foreground patches set by the schedule and the
batch strategy); :class:`CurriculumDataset` hands it each step's request and seeds the random transforms::

    crop = pgps.monai.CurriculumCropd(keys, label_key="label", indices_key="label_classes")
    volumes = CacheDataset(files, Compose([LoadImaged(keys), EnsureChannelFirstd(keys), ClassesToIndicesd(...),
                                           crop, RandFlipd(keys, prob=0.5, spatial_axis=0), ...]))
    sampler = pgps.monai.CurriculumBatchSampler(schedule, num_cases=len(files))
    loader = StatefulDataLoader(pgps.monai.CurriculumDataset(volumes), batch_sampler=sampler, num_workers=2,
                                collate_fn=list_data_collate)   # or monai.data.DataLoader, without state_dict()

The batch sampler is :class:`pgps.torch.CurriculumBatchSampler` (same plan, state and rank slicing).
"""

from pgps.monai.curriculum import CurriculumCropd, CurriculumDataset
from pgps.torch import CurriculumBatchSampler

__all__ = ["CurriculumBatchSampler", "CurriculumCropd", "CurriculumDataset"]
