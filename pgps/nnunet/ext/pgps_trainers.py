"""Entry point for nnU-Net's external trainer search (``nnUNet_extTrainer`` points at this folder)."""

from pgps.nnunet.variants import *  # noqa: F403 - nnU-Net looks the trainer classes up by name here
from pgps.nnunet.variants import __getattr__  # noqa: F401 - loss/learning-rate variants made on lookup
