"""The PGPS curriculum in a plain PyTorch training loop (needs ``pip install 'pgps[torch]'``; never imports nnU-Net).

A batch sampler plus a dataset, handed to ``torch.utils.data.DataLoader`` (or torchdata's
``StatefulDataLoader``, whose ``state_dict()`` resumes exactly with workers)::

    sampler = pgps.torch.CurriculumBatchSampler(schedule, num_cases=len(images), strategy="split_crop")
    dataset = pgps.torch.PatchDataset(images, labels, transform=augment)  # or load=load_case, num_cases=n
    loader = StatefulDataLoader(dataset, batch_sampler=sampler, collate_fn=pgps.torch.collate_patches, num_workers=2)
    while not sampler.finished:
        for batch in loader:        # one epoch: batch["image"] (b, C, *P), batch["label"] (b, 1, *P), ...
            ...
        checkpoint = {"loader": loader.state_dict(), ...}   # a new loader's load_state_dict continues from here

Each step's batch is planned by :class:`pgps.sampling.BatchPlanner`, the same code as the nnU-Net
loader's: the schedule's stage (patch and batch size), the cases of the batch strategy
(Split-Crop, Single-Crop, Multi-Crop, Single-Volume) and the forced-foreground share. Everything a
worker needs travels in the batch sampler's requests, so a stage change needs no rebuilt loader:
persistent workers (``persistent_workers=True``) stay valid from the first stage to the last.
"""

from pgps.torch.patches import (
    CurriculumBatchSampler,
    PatchDataset,
    collate_patches,
    crop_patches,
    load_volume,
    resize,
    resize_patches,
)

__all__ = [
    "CurriculumBatchSampler",
    "PatchDataset",
    "collate_patches",
    "crop_patches",
    "load_volume",
    "resize",
    "resize_patches",
]
