"""Inpainting reconstruction losses: pixel L1 (eq. 7) and total variation (eq. 8)."""

from __future__ import annotations

import torch

__all__ = ["pixel_l1", "pixel_l1_masked", "tv_loss"]


def pixel_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ||I_hat - I||_1 / (HWC), averaged over the batch. pred, target (B,C,H,W) -> scalar."""
    return (pred - target).abs().mean()


def pixel_l1_masked(pred: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """L1 over the occluded pixels only: sum(|I_hat - I| m) / (C sum(m)) over the batch. m (B,1,H,W) {0,1}.

    Not in the paper (eq. 7 averages over the whole image, where the visible pixels, copied from the input, dilute
    the hole); a batch without occluded pixels gives 0.
    """
    m = m.to(pred.dtype)
    return ((pred - target).abs() * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1.0)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Eq. 8: (||grad_x I||^2 + ||grad_y I||^2) / (HWC), averaged over the batch. image (B,C,H,W) -> scalar.

    Forward differences (x[..., j+1] - x[..., j] and the same along rows), squared and summed; both sums are
    divided by the full H*W*C (not by the (W-1) / (H-1) difference counts), exactly the paper's normalisation.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return ((dx ** 2).sum() + (dy ** 2).sum()) / image.numel()
