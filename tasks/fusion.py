"""Temporal fusion of the fill: each face track's crop result blended with its previous one, moved by the face's motion.

N_G fills every frame on its own, so even with steady inputs its fill shimmers from frame to frame. A FillFusion keeps
one fused crop per track and blends each new crop G_t into the previous fused crop warped onto this frame:

    F_t = a * G_t + (1 - a) * warp(F_{t-1}),   a = a0 + (1 - a0) * clip(|I3D_t - warp(I3D_{t-1})| / tau, 0, 1)

- ``warp`` (crop_flow): pixels the 3D face covers move as its mesh moved between the two frames (the coefficients
  of each frame, in each frame's own crop); the other pixels stay where they were in the video frame (a still
  camera: background, neck), through the two crops' similarity transforms;
- ``a``: where the rendered prior changes after motion compensation (the mouth opening, an edit, an animation's
  keyframes) the new frame is taken (a -> 1), so the fill follows the prior without lag; elsewhere ``a0``
  (default 0.3: a memory of about 1 / a0 = 3 frames; 0.15 flickers less but loses 0.3% hole L1 over 96 frames).

Only pixels inside this frame's hole m are fused; outside it the crop stays the input. Measured on the synthetic
talking head in docs/video.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FillFusion", "crop_flow", "DEFAULT_FUSE", "DEFAULT_FUSE_TAU"]

DEFAULT_FUSE = 0.3  # a0: the new frame's weight where the prior does not change
DEFAULT_FUSE_TAU = 0.25  # the prior change (max over RGB, [0, 1] units) at which the new frame is taken whole


def _affine3(t: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(t, np.float64), [0.0, 0.0, 1.0]])


@torch.no_grad()
def crop_flow(renderer, coeffs: torch.Tensor, prev_coeffs: torch.Tensor, transform: np.ndarray,
              prev_transform: np.ndarray) -> torch.Tensor:
    """Where each pixel of this frame's crop was in the previous frame's crop.

    renderer: the model's FaceRenderer (crop size S); coeffs / prev_coeffs (K, C) this frame's and the previous
    frame's coefficients, each in its own crop; transform / prev_transform (2, 3) video frame -> crop.
    Returns (K, S, S, 2) grid_sample coordinates in [-1, 1] (align_corners=True) into the previous crop: on the
    pixels the face mesh covers now, the previous projection of the same surface point; elsewhere the same point of
    the video frame.
    """
    from renderer.camera import project

    s = renderer.image_size
    still = _affine3(prev_transform) @ np.linalg.inv(_affine3(transform))  # this crop -> the previous one
    ys, xs = torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")
    q = torch.stack([still[0, 0] * xs + still[0, 1] * ys + still[0, 2],
                     still[1, 0] * xs + still[1, 1] * ys + still[1, 2]], -1).float()
    q = q.expand(coeffs.shape[0], s, s, 2).clone()
    coeffs, prev_coeffs = coeffs.float(), prev_coeffs.float().to(coeffs.device)
    cam, _ = renderer.camera_vertices(coeffs)
    frags = renderer.rasterize(cam, project(cam, renderer.focal, s))  # visibility only: no shading
    prev_cam, _ = renderer.camera_vertices(prev_coeffs)
    moved = renderer.rasterizer.interpolate(project(prev_cam, renderer.focal, s), frags).cpu()  # (K, S, S, 2)
    covered = frags.mask.cpu()
    q[covered] = moved[covered]
    return q / (s - 1) * 2 - 1


class FillFusion:
    """One face track's fused fill (module doc). ``__call__(removal, transform)`` each frame, in order.

    renderer: the model's FaceRenderer; a0: the new frame's weight where the prior is steady (1 = no fusion);
    tau: the prior change at which the new frame is taken whole."""

    def __init__(self, renderer, a0: float = DEFAULT_FUSE, tau: float = DEFAULT_FUSE_TAU):
        if not 0.0 < a0 <= 1.0 or tau <= 0:
            raise ValueError(f"the fusion weight (--fuse) must be in (0, 1] and its tau > 0, got {a0} and {tau}")
        self.renderer, self.a0, self.tau = renderer, float(a0), float(tau)
        self.prev = None  # (fused (K,3,S,S), i3d (K,3,S,S), coeffs (K,C), transform (2,3))

    @torch.no_grad()
    def __call__(self, removal, transform: np.ndarray) -> torch.Tensor:
        """removal: this frame's tasks.removal.Removal of one face (N = 1, K edits; images / i3d / m in the crop);
        transform (2, 3) video frame -> crop. Returns (K, 3, S, S) [0, 1], the fused crop results."""
        cur, i3d = removal.images[0].cpu().float(), removal.i3d[0].cpu().float()
        m, coeffs = removal.m[0].cpu().float(), removal.coeffs[0]
        fused = cur
        if self.a0 < 1.0 and self.prev is not None and self.prev[0].shape == cur.shape:
            p_fused, p_i3d, p_coeffs, p_transform = self.prev
            grid = crop_flow(self.renderer, coeffs, p_coeffs, transform, p_transform)
            warped = F.grid_sample(p_fused, grid, mode="bilinear", padding_mode="border", align_corners=True)
            w_i3d = F.grid_sample(p_i3d, grid, mode="bilinear", padding_mode="border", align_corners=True)
            change = (i3d - w_i3d).abs().amax(1, keepdim=True)
            a = self.a0 + (1.0 - self.a0) * (change / self.tau).clamp(0.0, 1.0)
            fused = torch.where(m[None] > 0.5, a * cur + (1.0 - a) * warped, cur)
        self.prev = (fused, i3d, coeffs.detach(), np.asarray(transform, np.float64))
        return fused
