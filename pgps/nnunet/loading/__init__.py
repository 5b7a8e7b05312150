"""The nnU-Net trainers' training data path: the loader of the core's batch plan (:mod:`.sampling`), the batched
augmentation (:mod:`.batched`) and Progressive Resolution's resampling (:mod:`.resample`)."""
