"""Convergence over training from the telemetry: nnU-Net's smoothing of the per-epoch pseudo Dice."""

from __future__ import annotations

import pandas as pd

PSEUDO_DICE_EMA = 0.1
"""Smoothing of nnU-Net's pseudo Dice (its own progress plot uses this exponential moving average)."""


def smooth_pseudo_dice(pseudo_dice: pd.Series) -> pd.Series:
    """nnU-Net's exponential moving average of the per-epoch pseudo Dice."""
    return pseudo_dice.ewm(alpha=PSEUDO_DICE_EMA).mean()
