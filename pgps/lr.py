"""Optional learning-rate scaling for large batches (off by default).

The PGPS article and the AMOS22 large-batch study both keep nnU-Net's initial learning rate
(0.01, SGD with Nesterov momentum) whatever the batch size; the AMOS22 study names the
learning rate as the parameter it did not change (its Discussion, citing Smith et al. 2018).
The two common rules are offered for experiments that do change it:

- ``"linear"``: ``lr = base_lr * b / b_ref`` (Goyal et al. 2017, "Accurate, Large Minibatch SGD");
- ``"sqrt"``: ``lr = base_lr * sqrt(b / b_ref)`` (Krizhevsky 2014, "One weird trick for
  parallelizing convolutional neural networks").

``b`` is the run's planned (global) batch size ``b_base``: under DDP the global batch, not a
rank's share. PGPS-Performance grows the batch of small-patch stages so that every batch holds
about ``b_base * numel(P_max)`` voxels; its learning rate is scaled by ``b_base`` alone, since the
rule is stated in samples of the same size and a stage's voxels per step stay those of ``b_base``
patches of ``P_max``.
"""

from __future__ import annotations

import math

LR_RULES = ("linear", "sqrt")
REFERENCE_BATCH_SIZE = 2
"""The batch size at which nnU-Net's learning rate is taken as right: nnU-Net's minimum and its usual
3d_fullres batch, and the AMOS22 study's baseline (Tables 1 and 3 at batch 2)."""


def scaled_learning_rate(
    base_lr: float, batch_size: int, reference_batch_size: int = REFERENCE_BATCH_SIZE, rule: str | None = None
) -> float:
    """``base_lr`` scaled from ``reference_batch_size`` to ``batch_size`` by ``rule`` (``None``: unchanged)."""
    if rule is None:
        return float(base_lr)
    if rule not in LR_RULES:
        raise ValueError(f"learning-rate scaling rule must be one of {', '.join(LR_RULES)} or None, got {rule!r}")
    for name, value in (("batch_size", batch_size), ("reference_batch_size", reference_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr!r}")
    ratio = batch_size / reference_batch_size
    return float(base_lr * (ratio if rule == "linear" else math.sqrt(ratio)))
