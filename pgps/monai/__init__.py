"""The PGPS curriculum in a MONAI training loop (needs ``pip install 'pgps[monai]'``; never imports nnU-Net).

Whole volumes come from a MONAI ``Dataset``/``CacheDataset`` (loading and the deterministic transforms,
cached), :class:`CurriculumCropd` crops each step's patches in place of ``RandCropByPosNegLabeld`` (stage
patch size, number of patches per volume and forced-foreground patches set by the schedule and the batch
strategy), and the random transforms run per patch, seeded per patch::

    volumes = CacheDataset(files, transform=Compose([LoadImaged(keys), EnsureChannelFirstd(keys), ...]))
    train = pgps.monai.CurriculumDataset(volumes, CurriculumCropd(keys, label_key="label"), transform=augment)
    sampler = pgps.monai.CurriculumBatchSampler(schedule, num_cases=len(files))
    loader = monai.data.DataLoader(train, batch_sampler=sampler, num_workers=2)   # list_data_collate

The batch sampler is :class:`pgps.torch.CurriculumBatchSampler` (same plan, state and rank slicing).
"""

from pgps.monai.curriculum import CurriculumCropd, CurriculumDataset
from pgps.torch import CurriculumBatchSampler

__all__ = ["CurriculumBatchSampler", "CurriculumCropd", "CurriculumDataset"]
