"""Datasets in nnU-Net's raw format: converters of public layouts with download, archive handling and checks
(:mod:`.convert`), label-set tools (:mod:`.labelsets`) and synthetic preprocessed data for the loader benchmark and
tests (:mod:`.synthdata`). Nothing here imports the trainers."""
