"""Segmentation loss for the occlusion map m (eq. 1) with online hard example mining (OHEM)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["bce_ohem"]


def bce_ohem(logits: torch.Tensor, target: torch.Tensor, keep_ratio: float = 0.7, min_kept: int = 1,
             per_image: bool = False) -> torch.Tensor:
    """Per-pixel BCE-with-logits (eq. 1) averaged over the hardest pixels only. Returns a scalar.

    logits (B,1,H,W) raw scores; target (B,1,H,W) in {0,1} (1 = occluded), same shape.
    Of the N pixels considered, the k = min(N, max(ceil(keep_ratio * N), min_kept)) pixels with the largest loss
    are averaged. ``per_image=False``: N = B*H*W, ranked over the whole batch; ``per_image=True``: N = H*W, ranked
    within each image, each image's mean taken, then the batch mean. ``keep_ratio=1`` is the plain BCE of eq. 1.
    Gradients flow only through the kept pixels.
    """
    if logits.shape != target.shape:
        raise ValueError(f"bce_ohem: logits {tuple(logits.shape)} vs target {tuple(target.shape)}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"bce_ohem: keep_ratio must be in (0, 1], got {keep_ratio}")
    loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    loss = loss.reshape(logits.shape[0], -1) if per_image else loss.reshape(1, -1)
    n = loss.shape[1]
    k = min(n, max(math.ceil(keep_ratio * n), min_kept))
    return loss.topk(k, dim=1, sorted=False).values.mean()
