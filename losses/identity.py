"""Identity loss (eq. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["identity_loss"]


def identity_loss(feat_a: torch.Tensor, feat_b: torch.Tensor) -> torch.Tensor:
    """Eq. 4: 1 - cos(F(a), F(b)), mean over the batch. feat_a, feat_b (B,D) (normalised or not) -> scalar in [0,2]."""
    return (1.0 - F.cosine_similarity(feat_a, feat_b, dim=1, eps=1e-8)).mean()
