"""The OpenCV inpainting baselines of the evaluation table and of validation: Telea and Navier-Stokes."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from data.io import to_uint8_hwc

OPENCV_METHODS = {"telea": cv2.INPAINT_TELEA, "navier_stokes": cv2.INPAINT_NS}


def opencv_inpaint(masked: torch.Tensor, m: torch.Tensor, method: str, radius: int = 3) -> torch.Tensor:
    """cv2.inpaint of masked (N,3,H,W) [0,1] inside m (N,1,H,W) (> 0.5 = hole) -> (N,3,H,W) [0,1] on 8-bit steps.

    method: a key of OPENCV_METHODS (``telea`` or ``navier_stokes``); radius: OpenCV's inpaintRadius in pixels.
    """
    if method not in OPENCV_METHODS:
        raise ValueError(f"unknown OpenCV inpainting method {method!r}; valid: {', '.join(OPENCV_METHODS)}")
    out = []
    for img, mm in zip(masked.detach().float().cpu(), m.detach().float().cpu()):
        u8 = to_uint8_hwc(img)
        hole = (mm[0].numpy() > 0.5).astype(np.uint8)
        res = cv2.inpaint(u8, hole, radius, OPENCV_METHODS[method])
        out.append(torch.from_numpy(res).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(masked.device)


def telea(masked: torch.Tensor, m: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Telea's fast-marching inpainting (opencv_inpaint's shapes and ranges)."""
    return opencv_inpaint(masked, m, "telea", radius)


def navier_stokes(masked: torch.Tensor, m: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Bertalmio et al.'s Navier-Stokes inpainting (opencv_inpaint's shapes and ranges)."""
    return opencv_inpaint(masked, m, "navier_stokes", radius)
