"""Adversarial losses: non-saturating G loss (eq. 9), D's BCE and zero-centred R1 penalty (eq. 11, StarGAN v2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["g_nonsaturating", "d_bce", "r1_penalty"]


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 9: -E[log sigmoid(D(I_hat))] = softplus(-logits).mean(). fake_logits (B,) -> scalar."""
    return F.softplus(-fake_logits).mean()


def d_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE part of eq. 11 (real -> 1, fake -> 0): softplus(-real).mean() + softplus(fake).mean(). -> scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty on real images: 0.5 * mean_b sum_{c,h,w} (dD(x_b)/dx_b)^2. -> scalar.

    ``real_images`` must have ``requires_grad=True`` before ``real_logits = D(real_images)`` is computed. The
    gradient graph is kept (create_graph=True) so the penalty trains D. Multiply by the config weight (StarGAN v2
    uses 1).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: call real_images.requires_grad_() before computing D(real_images)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()
