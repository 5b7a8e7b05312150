"""Convergence over training from the telemetry: pseudo Dice against epochs and iterated voxels."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from pgps.report.style import ordered, strategy


def plot_convergence(telemetry: dict[str, pd.DataFrame], title: str) -> Figure:
    """``telemetry``: mode -> the run's ``pgps_telemetry.csv`` as a frame.

    Left: nnU-Net's pseudo Dice (validation patches at ``P_max``) per epoch; right: the same
    against cumulative iterated voxels, the article's FLOP proxy.
    """
    fig = Figure(figsize=(7.2, 3.0), layout="constrained")
    by_epoch, by_voxels = fig.subplots(1, 2, sharey=True)
    for mode in ordered(telemetry):
        df = telemetry[mode]
        style = strategy(mode).line_kwargs()
        smooth = df["pseudo_dice"].ewm(alpha=0.1).mean()  # nnU-Net's EMA of the pseudo Dice
        by_epoch.plot(df["epoch"], smooth, **style)
        by_voxels.plot(df["iterated_voxels"].cumsum() / 1e9, smooth, **{**style, "label": None})
    by_epoch.set_xlabel("training epoch")
    by_epoch.set_ylabel("pseudo Dice (EMA) at $P_{max}$")
    by_voxels.set_xlabel("iterated voxels [$10^9$]")
    for ax in (by_epoch, by_voxels):
        ax.grid(alpha=0.3)
    by_epoch.legend(loc="lower right")
    fig.suptitle(title)
    return fig
