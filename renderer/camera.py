"""Rigid pose and pinhole camera of Deng et al.'s 3DMM pipeline.

Model space: decimetres, x to the face's left (image right), y up, z toward the camera. The camera sits on the +z
axis at `camera_distance` and looks down -z, so a point's camera depth is ``camera_distance - z``.

Pixel coordinates follow the project convention: x right, y DOWN, pixel (row i, column j) has its centre at
(x=j, y=i). The principal point is the image centre ((W - 1) / 2, (H - 1) / 2). (Deng et al. use c = 112 with v up
and flip rows as H - 1 - v; the half-pixel difference is deliberate, it makes the projection symmetric under our
pixel-centre convention.)
"""

from __future__ import annotations

import torch

DENG_FOCAL_224 = 1015.0  # focal length in pixels for a 224 px image (Deng et al.)
DENG_CAMERA_DISTANCE = 10.0


def default_focal(image_size: int) -> float:
    """Deng et al.'s focal length scaled to `image_size` pixels: 1015 / 224 * image_size."""
    return DENG_FOCAL_224 / 224.0 * float(image_size)


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from Euler angles.

    angles: (B, 3) radians (x pitch, y yaw, z roll). Returns R (B, 3, 3) = Rz @ Ry @ Rx; points rotate as
    ``pts @ R.transpose(1, 2)`` (Deng et al.'s convention).
    """
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def model_to_camera(points: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor,
                    camera_distance: float = DENG_CAMERA_DISTANCE) -> torch.Tensor:
    """Rotate, translate and look from the camera, as one batched affine product (the z flip folded into R).

    points (B, V, 3) model space, rot (B, 3, 3) from `euler_rotation` (points rotate as ``pts @ R^T``), trans (B, 3)
    decimetres -> (B, V, 3) camera space: x right, y up, z = camera_distance - world z (depth, > 0 in front).
    """
    flip = torch.tensor([1.0, 1.0, -1.0], dtype=points.dtype, device=points.device)
    offset = trans * flip + torch.tensor([0.0, 0.0, camera_distance], dtype=points.dtype, device=points.device)
    return torch.baddbmm(offset.unsqueeze(1), points, rot.transpose(1, 2) * flip)


def project(cam_points: torch.Tensor, focal: float, image_size: int) -> torch.Tensor:
    """Perspective projection of camera-space points (B, V, 3) -> pixel coordinates (B, V, 2), x right, y down.

    Pixel centres are integers; the principal point is ((size - 1) / 2, (size - 1) / 2).
    """
    c = (image_size - 1) / 2.0
    inv_z = 1.0 / cam_points[..., 2]
    u = focal * cam_points[..., 0] * inv_z + c
    v = c - focal * cam_points[..., 1] * inv_z  # model y is up, image y is down
    return torch.stack([u, v], dim=-1)
