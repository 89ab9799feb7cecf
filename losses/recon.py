"""3D reconstruction losses: coefficients (eq. 2), photometric (eq. 3) and landmarks (eq. 5)."""

from __future__ import annotations

import torch

__all__ = ["coef_l1", "photo_loss", "landmark_weights", "landmark_loss", "NOSE_IDX", "INNER_MOUTH_IDX"]

# iBUG-68 (0-based): nose = bridge 27-30 + lower nose 31-35; inner lips 60-67.
NOSE_IDX = tuple(range(27, 36))
INNER_MOUTH_IDX = tuple(range(60, 68))


def coef_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean |c_hat - c| over the N coefficient dimensions and the batch. pred, target (B,N) -> scalar."""
    return (pred - target).abs().mean()


def photo_loss(rendered: torch.Tensor, image: torch.Tensor, face_mask: torch.Tensor,
               eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3 as Deng et al.: sum over pixels of ||I_3D - I||_2 (norm over RGB) * M, divided by sum(M).

    rendered, image (B,3,H,W) [0,1]; face_mask M (B,1,H,W) in {0,1} (or soft weights). Sums run over the whole
    batch (each masked pixel weighs the same). sqrt(|d|^2 + 1e-8) keeps the gradient finite where I_3D == I;
    an empty region gives 0 (denominator clamped to ``eps``). Returns a scalar (mean colour distance, [0, sqrt 3]).
    """
    dist = torch.sqrt(((rendered - image) ** 2).sum(dim=1, keepdim=True) + 1e-8)
    mask = face_mask.to(dist.dtype)
    return (dist * mask).sum() / mask.sum().clamp_min(eps)


def landmark_weights(n: int = 68, nose: float = 20.0, inner_mouth: float = 20.0,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Per-landmark weights w_i of eq. 5: ``nose`` on indices 27-35, ``inner_mouth`` on 60-67, 1 elsewhere. (n,)"""
    if n != 68:
        raise ValueError(f"landmark_weights: defined for the iBUG-68 scheme, got n={n}")
    w = torch.ones(n, device=device)
    w[list(NOSE_IDX)] = nose
    w[list(INNER_MOUTH_IDX)] = inner_mouth
    return w


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: mean over points of w_i * ||q_hat_i - q_i||^2, then mean over the batch. Returns a scalar.

    pred, target (B,68,2) pixel coordinates (the loss scales with resolution^2: lambda_lm = 0.001 of the paper
    assumes pixel units at the training resolution); weights (68,) or None (= ``landmark_weights()``).
    """
    if weights is None:
        weights = landmark_weights(pred.shape[1], device=pred.device)
    sq = ((pred - target) ** 2).sum(dim=-1)  # (B,68)
    return (sq * weights.to(sq.dtype)).mean()
