"""Inference and evaluation with nnU-Net: adaptive sliding-window prediction (:mod:`.predict`), ensembles and
post-processing (:mod:`.ensemble`), in-process evaluation (:mod:`.evaluation`) and surface metrics of prediction
folders (:mod:`.surface`). Nothing here imports the trainers."""
