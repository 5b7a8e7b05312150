"""Loss variants for every PGPS trainer: nnU-Net's Dice + CE, Dice + Focal, Dice + TopK10, Dice + perimeter.

The AMOS22 large-batch study (Table 3) compares four losses at batch 2 and patch 64x288x288:
Dice & CE (nnU-Net's default), Dice & Focal (its reference 11, Lin et al. 2017), Dice & TopK
(reference 10; nnU-Net's own ``nnUNetTrainerDiceTopK10Loss``) and Dice & Perim (reference 8,
El Jurdi et al., "A surprisingly effective perimeter-based loss for medical image segmentation",
MIDL 2021, PMLR 143). A trainer chooses one with its ``loss_variant`` attribute
(:data:`LOSS_VARIANTS`); :func:`vary_loss` turns nnU-Net's default loss into the variant, so the
Dice term (nnU-Net's ``MemoryEfficientSoftDiceLoss``: batch Dice as planned, background excluded,
DDP-aware), the ignore label and the deep-supervision weights stay exactly nnU-Net's.

- ``dice_ce``: nnU-Net's loss, unchanged.
- ``dice_focal``: the cross-entropy term replaced by :class:`FocalLoss`, ``-(1 - p_t)**gamma *
  log(p_t)`` per voxel (Lin et al. 2017, Eq. 4; ``gamma`` = 2, their best value; their
  ``alpha`` balancing is an option, ``focal_alpha``, off by default: Lin et al. pair gamma = 2 with
  alpha = 0.25 for one binary "object" class, and a multi-class segmentation has no single rare
  class to weight), averaged over the annotated voxels; softmax over classes, or a sigmoid per
  channel for region-based datasets (Lin et al.'s own binary form).
- ``dice_topk10``: nnU-Net's ``DC_and_topk_loss`` with ``k`` = 10, as its
  ``nnUNetTrainerDiceTopK10Loss`` builds it (cross-entropy over the 10% hardest voxels; not for
  region-based datasets, like nnU-Net's trainer).
- ``dice_perimeter``: the cross-entropy term replaced by :class:`PerimeterLoss`. From the
  publication (its abstract) and the authors' code (``losses.py`` and ``scheduler.py`` of
  github.com/rosanajurdi/Prior-based-Losses-for-Medical-Image-Segmentation): the contour of a
  probability map ``s`` is approximated without trainable parameters by min- and max-pooling,
  ``C(s) = ReLU(maxpool(minpool(s)) - minpool(s))`` (3-wide windows, stride 1: a soft morphological
  opening minus the erosion, i.e. the inner boundary ring of a binary mask); the perimeter of
  class ``k`` is the sum of ``C`` over the image; the loss is the squared difference between the
  predicted and the ground-truth perimeter, divided by the number of pixels. In 3D the windows
  are 3x3x3 and the perimeter is a surface measured in voxels. Our reductions: foreground classes
  summed, batch averaged. The authors train it next to a Dice loss whose weight they shift to the
  perimeter term epoch by epoch (their ``StealWeight`` scheduler: weights 1 and 0.01 at the start,
  0.01 moved per epoch over 200 epochs, Dice kept at least 0.1); :class:`Rebalancing` applies
  that schedule over the run's own number of epochs (by the fraction of training done).

Every term computes in float32 (perimeters sum over a whole patch; float16 under autocast would
overflow) on the logits' device.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss, DC_and_topk_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from torch import nn

LOSS_VARIANTS = ("dice_ce", "dice_focal", "dice_topk10", "dice_perimeter")
"""Loss variants a PGPS trainer can train with (``loss_variant``); ``dice_ce`` is nnU-Net's default."""
TOPK_PERCENT = 10


def _class_indices(
    target: torch.Tensor, logits: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class indices (B, *spatial) from a (B, 1, *spatial) or (B, *spatial) target, ignored voxels set to 0, and
    the mask of the voxels that count (``None`` without an ignore label)."""
    if target.ndim == logits.ndim:
        target = target[:, 0]
    target = target.long()
    if ignore_index is None:
        return target, None
    valid = target != ignore_index
    return torch.where(valid, target, torch.zeros_like(target)), valid


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)**gamma log(p_t)``, averaged over voxels.

    Softmax form (default): ``logits`` (B, C, *spatial), ``target`` class indices (B, *spatial) or
    (B, 1, *spatial); voxels equal to ``ignore_index`` are left out of the mean. With ``alpha``
    (a number), foreground classes get ``alpha`` and the background ``1 - alpha`` (MONAI's convention).
    Sigmoid form (``sigmoid=True``, region-based datasets): ``target`` is binary (B, C, *spatial),
    one channel per region; ``reduction="none"`` returns the per-element loss (nnU-Net's
    ``DC_and_BCE_loss`` then masks ignored voxels itself).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        ignore_index: int | None = None,
        sigmoid: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.gamma, self.alpha, self.ignore_index = float(gamma), alpha, ignore_index
        self.sigmoid, self.reduction = sigmoid, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.sigmoid:
            positive = target.to(logits.dtype)
            log_pt = positive * F.logsigmoid(logits) + (1 - positive) * F.logsigmoid(-logits)
            loss = -(1 - log_pt.exp()).pow(self.gamma) * log_pt
            if self.alpha is not None:
                loss = loss * (self.alpha * positive + (1 - self.alpha) * (1 - positive))
            return loss if self.reduction == "none" else loss.mean()
        target, valid = _class_indices(target, logits, self.ignore_index)
        log_pt = logits.log_softmax(1).gather(1, target[:, None])[:, 0]
        loss = -(1 - log_pt.exp()).pow(self.gamma) * log_pt
        if self.alpha is not None:
            loss = loss * torch.where(target > 0, self.alpha, 1 - self.alpha)
        if self.reduction == "none":
            return loss if valid is None else loss * valid
        if valid is None:
            return loss.mean()
        return (loss * valid).sum() / valid.sum().clamp_min(1)


def soft_contour(probabilities: torch.Tensor) -> torch.Tensor:
    """El Jurdi et al.'s soft contour of probability maps (B, C, *spatial), 2D or 3D: the soft opening
    (max-pool of the min-pool) minus the min-pool (soft erosion), with 3-wide windows and stride 1."""
    pool = {4: F.max_pool2d, 5: F.max_pool3d}.get(probabilities.ndim)
    if pool is None:
        raise ValueError(f"soft_contour needs (B, C, X, Y) or (B, C, X, Y, Z) maps, got {tuple(probabilities.shape)}")
    eroded = -pool(-probabilities, 3, 1, 1)
    return F.relu(pool(eroded, 3, 1, 1) - eroded)


def soft_perimeter(probabilities: torch.Tensor) -> torch.Tensor:
    """Perimeter (2D) or surface (3D) of each map, in pixels/voxels: the sum of :func:`soft_contour`, shape (B, C)."""
    return soft_contour(probabilities).flatten(2).sum(-1)


class PerimeterLoss(nn.Module):
    """El Jurdi et al.'s perimeter loss: ``sum_k (per(s_k) - per(g_k))**2 / |Omega|``, averaged over the batch.

    ``s_k`` are the softmax probabilities of the foreground classes (sigmoid per channel with
    ``sigmoid=True``), ``g_k`` the one-hot ground truth, ``per`` :func:`soft_perimeter` and ``|Omega|``
    the number of voxels of the patch. Voxels equal to ``ignore_index`` are set to 0 in both maps.
    ``schedule`` (a :class:`Rebalancing`) sets the weights of the compound loss per epoch.
    """

    def __init__(self, ignore_index: int | None = None, sigmoid: bool = False, schedule: Rebalancing | None = None):
        super().__init__()
        self.ignore_index, self.sigmoid = ignore_index, sigmoid
        self.schedule = schedule

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.sigmoid:
            probabilities, truth = torch.sigmoid(logits), target.to(logits.dtype)
        else:
            target, valid = _class_indices(target, logits, self.ignore_index)
            probabilities = logits.softmax(1)
            truth = torch.zeros_like(probabilities).scatter_(1, target[:, None], 1.0)
            if valid is not None:
                mask = valid[:, None].to(probabilities.dtype)
                probabilities, truth = probabilities * mask, truth * mask
            probabilities, truth = probabilities[:, 1:], truth[:, 1:]  # foreground classes
        voxels = math.prod(logits.shape[2:])
        squared = (soft_perimeter(probabilities) - soft_perimeter(truth)).pow(2)
        return squared.sum(1).mean() / voxels


@dataclasses.dataclass(frozen=True)
class Rebalancing:
    """The perimeter authors' weight schedule (their ``StealWeight``), over a run of any length.

    At epoch ``e`` of their ``reference_epochs``-epoch runs the Dice weight is
    ``max(floor, 1 - step * e)`` and the perimeter weight ``start + step * e``; a run of ``E``
    epochs uses the weights at the same fraction of training (``e = epoch * reference_epochs / E``).
    """

    start: float = 0.01
    step: float = 0.01
    floor: float = 0.1
    reference_epochs: int = 200

    def weights(self, epoch: int, num_epochs: int) -> tuple[float, float]:
        """``(Dice weight, perimeter weight)`` of ``epoch`` (0-based) in a run of ``num_epochs``."""
        e = epoch * self.reference_epochs / max(num_epochs, 1)
        return max(self.floor, 1 - self.step * e), self.start + self.step * e


def _compound(loss: nn.Module) -> nn.Module:
    return loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss


def vary_loss(
    default: nn.Module,
    variant: str,
    *,
    has_regions: bool,
    ignore_label: int | None,
    batch_dice: bool,
    is_ddp: bool,
    focal_alpha: float | None = None,
) -> nn.Module:
    """nnU-Net's default training loss ``default`` (from ``nnUNetTrainer._build_loss``) as ``variant``
    (``focal_alpha``: :class:`FocalLoss`'s ``alpha`` for ``dice_focal``; None: no class weighting).

    The Dice term, the ignore label and the deep-supervision wrapper and weights are kept; only the
    second term changes (Dice + TopK10 is nnU-Net's own ``DC_and_topk_loss``, built as its
    ``nnUNetTrainerDiceTopK10Loss`` does).
    """
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"loss_variant must be one of {', '.join(LOSS_VARIANTS)}, got {variant!r}")
    if focal_alpha is not None and variant != "dice_focal":
        raise ValueError(f"focal_alpha applies to the dice_focal loss, not to {variant}")
    if variant == "dice_ce":
        return default
    compound = _compound(default)
    if not isinstance(compound, (DC_and_CE_loss, DC_and_BCE_loss)):
        raise ValueError(f"cannot vary {type(compound).__name__}: expected nnU-Net's DC_and_CE_loss or DC_and_BCE_loss")
    if variant == "dice_topk10":
        if has_regions:
            raise ValueError("Dice + TopK10 does not support region-based datasets (as nnU-Net's own TopK trainers)")
        compound = DC_and_topk_loss(
            {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": is_ddp},
            {"k": TOPK_PERCENT, "label_smoothing": 0.0},
            weight_ce=1,
            weight_dice=1,
            ignore_label=ignore_label,
        )
    elif variant == "dice_focal":
        elementwise = has_regions and getattr(compound, "use_ignore_label", False)
        compound.ce = FocalLoss(
            alpha=focal_alpha,
            ignore_index=None if has_regions else ignore_label,
            sigmoid=has_regions,
            reduction="none" if elementwise else "mean",
        )
    else:  # dice_perimeter
        if has_regions and getattr(compound, "use_ignore_label", False):
            raise ValueError("Dice + perimeter does not support region-based datasets with an ignore label")
        compound.ce = PerimeterLoss(ignore_index=None if has_regions else ignore_label, sigmoid=has_regions,
                                    schedule=Rebalancing())  # fmt: skip
        compound.weight_dice, compound.weight_ce = compound.ce.schedule.weights(0, 1)
    if isinstance(default, DeepSupervisionWrapper):
        return DeepSupervisionWrapper(compound, default.weight_factors)
    return compound


def loss_weights_for_epoch(loss: nn.Module, epoch: int, num_epochs: int) -> tuple[float, float] | None:
    """Apply a scheduled compound loss's weights for ``epoch``; return ``(Dice, other)`` or ``None`` if fixed."""
    compound = _compound(loss)
    schedule = getattr(getattr(compound, "ce", None), "schedule", None)
    if schedule is None:
        return None
    compound.weight_dice, compound.weight_ce = schedule.weights(epoch, num_epochs)
    return compound.weight_dice, compound.weight_ce


def describe_loss(loss: nn.Module, variant: str) -> dict:
    """What the run's summary records about its loss."""
    compound = _compound(loss)
    term = getattr(compound, "ce", None)
    out = {"variant": variant, "terms": [type(getattr(compound, "dc", None)).__name__, type(term).__name__]}
    if isinstance(term, FocalLoss):
        out.update(gamma=term.gamma, alpha=term.alpha)
    if isinstance(term, PerimeterLoss) and term.schedule is not None:
        out["weights"] = dataclasses.asdict(term.schedule) | {"rule": "rebalancing (El Jurdi et al.'s StealWeight)"}
    if isinstance(loss, DeepSupervisionWrapper):
        out["deep_supervision_weights"] = [float(w) for w in loss.weight_factors]
    return out
