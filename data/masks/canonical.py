"""The canonical face frame that every mask template lives in.

Units: one unit is half the face width between jaw landmarks 0 and 16; x right, y down, z towards the camera; the
origin is midway between the jaw ends at the height of the nose tip region. The 68 points follow iBUG-68 order
(0-based). They are a hand-built average face (proportions of a frontal dlib-style landmark set), not fitted data.

A mask raster covers the canonical rectangle ``FRAME`` sampled at ``PX_PER_UNIT`` pixels per unit; raster pixel
(row v, col u) has its centre at canonical ``(x, y) = (FRAME.x0 + u / PX_PER_UNIT, FRAME.y0 + v / PX_PER_UNIT)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

JAW_TOP_Y = -0.25
JAW_EXPONENT = 2.6  # super-ellipse exponent: > 2 makes the jaw squarer than an ellipse


def jaw_point(phi: np.ndarray) -> np.ndarray:
    """Points on the canonical jaw curve: phi in [-pi/2, pi/2] (-pi/2 left ear level, 0 chin) -> (..., 3) xyz."""
    phi = np.asarray(phi, dtype=np.float64)
    s, c = np.sin(phi), np.abs(np.cos(phi))
    x = np.sign(s) * np.abs(s) ** (2 / JAW_EXPONENT)
    y = JAW_TOP_Y + (1.0 - JAW_TOP_Y) * c ** (2 / JAW_EXPONENT)
    z = 0.05 - 0.55 * np.abs(s) ** 1.5
    return np.stack([x, y, z], -1)


def jaw_y_at(x: np.ndarray) -> np.ndarray:
    """y of the lower canonical jaw curve at x (JAW_TOP_Y for |x| >= 1)."""
    ax = np.clip(np.abs(np.asarray(x, dtype=np.float64)), 0.0, 1.0)
    s = ax ** (JAW_EXPONENT / 2)
    c = np.sqrt(np.clip(1.0 - s * s, 0.0, 1.0))
    return JAW_TOP_Y + (1.0 - JAW_TOP_Y) * c ** (2 / JAW_EXPONENT)


def jaw_x_at(y: np.ndarray) -> np.ndarray:
    """Half width of the canonical jaw curve at height y (0 below the chin, 1 above ear level)."""
    t = np.clip((np.asarray(y, dtype=np.float64) - JAW_TOP_Y) / (1.0 - JAW_TOP_Y), 0.0, 1.0)
    c = t ** (JAW_EXPONENT / 2)
    s = np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0))
    return s ** (2 / JAW_EXPONENT)


def _jaw() -> np.ndarray:
    """17 jaw points (x, y, z) on the jaw curve from ear level (0) over the chin (8) to (16)."""
    return jaw_point((np.arange(17) - 8) / 8 * math.pi / 2)


def _mirror(pts: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    return [(-x, y, z) for x, y, z in pts]


def _canonical_3d() -> np.ndarray:
    brow_l = [(-0.85, -0.55, -0.25), (-0.70, -0.64, -0.08), (-0.52, -0.67, 0.03), (-0.34, -0.65, 0.09),
              (-0.16, -0.60, 0.12)]
    brow_r = _mirror(brow_l[::-1])
    bridge = [(0.0, -0.36, 0.12), (0.0, -0.21, 0.22), (0.0, -0.05, 0.33), (0.0, 0.12, 0.45)]
    nose_base = [(-0.19, 0.22, 0.17), (-0.10, 0.25, 0.24), (0.0, 0.27, 0.28), (0.10, 0.25, 0.24), (0.19, 0.22, 0.17)]
    # eye order: outer corner, two upper lid points, inner corner, two lower lid points (clockwise in the image)
    eye_l = [(-0.66, -0.35, -0.10), (-0.54, -0.42, -0.02), (-0.38, -0.43, 0.0), (-0.25, -0.35, 0.0),
             (-0.38, -0.30, 0.0), (-0.54, -0.30, -0.02)]
    eye_r = [(0.25, -0.35, 0.0), (0.38, -0.43, 0.0), (0.54, -0.42, -0.02), (0.66, -0.35, -0.10),
             (0.54, -0.30, -0.02), (0.38, -0.30, 0.0)]
    lips_out = [(-0.40, 0.60, 0.08), (-0.26, 0.52, 0.17), (-0.10, 0.48, 0.23), (0.0, 0.50, 0.24),
                (0.10, 0.48, 0.23), (0.26, 0.52, 0.17), (0.40, 0.60, 0.08), (0.27, 0.70, 0.15),
                (0.12, 0.75, 0.2), (0.0, 0.76, 0.21), (-0.12, 0.75, 0.2), (-0.27, 0.70, 0.15)]
    lips_in = [(-0.32, 0.60, 0.1), (-0.12, 0.57, 0.18), (0.0, 0.575, 0.19), (0.12, 0.57, 0.18),
               (0.32, 0.60, 0.1), (0.12, 0.62, 0.18), (0.0, 0.625, 0.19), (-0.12, 0.62, 0.18)]
    rest = brow_l + brow_r + bridge + nose_base + eye_l + eye_r + lips_out + lips_in
    return np.concatenate([_jaw(), np.array(rest)], 0)


CANONICAL_LANDMARKS_3D: np.ndarray = _canonical_3d().astype(np.float64)
"""(68, 3) float64 canonical 3D landmarks (x right, y down, z towards the camera)."""
CANONICAL_LANDMARKS_3D.setflags(write=False)

CANONICAL_LANDMARKS: np.ndarray = CANONICAL_LANDMARKS_3D[:, :2].copy()
"""(68, 2) float64 frontal canonical landmarks (x, y) in canonical units."""
CANONICAL_LANDMARKS.setflags(write=False)

# Landmarks that drive the template -> face warp: the jaw outline, the nose, the eye corners (they pin the top edge
# below the eyes) and the outer lip extremes (they carry an open mouth down to the chin).
FIT_ANCHORS: tuple[int, ...] = tuple(range(17)) + (27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57)

NOSE_TIP = 30
CHIN = 8
MOUTH = tuple(range(48, 68))
EYES = tuple(range(36, 48))


@dataclass(frozen=True)
class Frame:
    """Canonical rectangle covered by mask rasters: x in [x0, x1], y in [y0, y1] (canonical units)."""

    x0: float = -1.5
    x1: float = 1.5
    y0: float = -0.8
    y1: float = 2.3


FRAME = Frame()
PX_PER_UNIT = 56.0
FRAME_SIZE = (int(round((FRAME.y1 - FRAME.y0) * PX_PER_UNIT)) + 1, int(round((FRAME.x1 - FRAME.x0) * PX_PER_UNIT)) + 1)
"""(height, width) of the full canonical raster in pixels."""


def canonical_to_raster(xy: np.ndarray, ppu: float = PX_PER_UNIT) -> np.ndarray:
    """Canonical (..., 2) coordinates -> full-frame raster pixel coordinates (u, v)."""
    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[..., 0] - FRAME.x0) * ppu, (xy[..., 1] - FRAME.y0) * ppu], -1)


def rotation_matrix(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(3, 3) rotation R = Rz(roll) Ry(yaw) Rx(pitch); angles in degrees, positive yaw turns the face to image right."""
    a, b, c = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def posed_landmarks(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, mouth_open: float = 0.0,
                    size: int = 256, scale: float | None = None, center: tuple[float, float] | None = None,
                    points3d: np.ndarray | None = None) -> np.ndarray:
    """Project the canonical 3D landmarks with a head pose into a ``size`` x ``size`` image (weak perspective).

    Args:
        yaw, pitch, roll: degrees. mouth_open: lower lip, inner lower lip and chin drop in canonical units (0-0.4).
        scale: pixels per canonical unit (default ``0.26 * size``); center: pixel position of the canonical origin.
    Returns:
        (68, 2) float32 pixel coordinates (x right, y down).
    """
    pts = np.array(CANONICAL_LANDMARKS_3D if points3d is None else points3d, dtype=np.float64)
    if mouth_open:
        # the jaw hinges near the ears: lower points drop in proportion to how far below the mouth line they lie
        drop = np.clip((pts[:, 1] - 0.55) / 0.45, 0.0, 1.0)
        low = np.array([55, 56, 57, 58, 59, 65, 66, 67])
        drop[low] = np.maximum(drop[low], 0.9)
        pts[:, 1] += mouth_open * drop
    rot = rotation_matrix(yaw, pitch, roll)
    pivot = np.array([0.0, 0.1, -0.6])
    proj = (pts - pivot) @ rot.T
    scale = 0.26 * size if scale is None else scale
    cx, cy = (size / 2.0, size * 0.52) if center is None else center
    out = proj[:, :2] * scale + np.array([cx, cy])
    return out.astype(np.float32)
