"""Geometry metrics: occlusion-mask IoU (N_3D's segmentation) and 68-point landmark NME (N_3D's reconstruction)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import PerImageMetric, mask_area

LEFT_EYE_OUTER = 36  # iBUG-68, 0-based: outer corners used for the inter-ocular distance
RIGHT_EYE_OUTER = 45


def mask_iou(pred_mask: Tensor, true_mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union of binary masks, per image.

    Args:
        pred_mask, true_mask: (N,1,H,W) or (N,H,W); a pixel is set where the value > threshold (so probabilities
            and {0,1} maps both work).
    Returns:
        (N,) float64 in [0,1]; 1 when both masks are empty (nothing to find, nothing found).
    """
    if pred_mask.shape != true_mask.shape:
        raise ValueError(f"mask shapes differ: {tuple(pred_mask.shape)} vs {tuple(true_mask.shape)}")
    p = (pred_mask > threshold).reshape(pred_mask.shape[0], -1)
    t = (true_mask > threshold).reshape(true_mask.shape[0], -1)
    inter = (p & t).sum(dim=1).to(torch.float64)
    union = (p | t).sum(dim=1).to(torch.float64)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def landmark_nme(pred: Tensor, target: Tensor) -> Tensor:
    """Normalised mean error of 68 landmarks, per image.

    Mean over the 68 points of the Euclidean distance |pred_k - target_k|, divided by the inter-ocular distance of the
    target (outer eye corners, points 36 and 45, 0-based iBUG-68).

    Args:
        pred, target: (N,68,2) pixel coordinates (x right, y down) in the same image.
    Returns:
        (N,) float64, >= 0 (0 for identical landmarks).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2 or pred.shape[1] <= RIGHT_EYE_OUTER:
        raise ValueError(f"expected two (N,68,2) landmark tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p = pred.to(torch.float64)
    t = target.to(torch.float64)
    err = (p - t).norm(dim=-1).mean(dim=1)
    iod = (t[:, LEFT_EYE_OUTER] - t[:, RIGHT_EYE_OUTER]).norm(dim=-1)
    return err / iod


class MaskIoUMetric(PerImageMetric):
    """Mean per-image IoU. update(pred_mask, true_mask): (N,1,H,W); the area used for bins is true_mask's."""

    name = "mask_iou"
    kind = "mask"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        super().__init__()

    def per_image(self, pred, target, mask=None, landmarks=None):
        return mask_iou(pred, target, self.threshold)

    def area_of(self, pred, target, mask):
        return mask_area(target if mask is None else mask)


class LandmarkNMEMetric(PerImageMetric):
    """Mean per-image landmark NME. update(pred, target, mask=None): landmarks (N,68,2); mask only for bins."""

    name = "landmark_nme"
    kind = "landmarks"
    higher_is_better = False

    def per_image(self, pred, target, mask=None, landmarks=None):
        return landmark_nme(pred, target)
