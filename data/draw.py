"""Drawing on 8-bit RGB images for figures and debug views: points (landmarks) and grids of tiles.

Images here are (H, W, 3) uint8 RGB arrays (``data.io.to_uint8_hwc`` makes one from a tensor); points are (N, 2)
pixel coordinates (x right, y down) with pixel centres at integers, so a point is drawn at the nearest pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["draw_points", "tile_grid", "label"]


def draw_points(img: np.ndarray, points, colour: tuple[int, int, int], radius: int = 1,
                antialias: bool = True) -> np.ndarray:
    """Filled dots of ``radius`` px at ``points`` (N, 2), drawn into ``img`` (H, W, 3) uint8 in place; points that
    are not finite are skipped. -> img."""
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(img, (int(round(x)), int(round(y))), int(radius), tuple(int(c) for c in colour), -1, line)
    return img


def label(img: np.ndarray, text: str, org: tuple[int, int] = (3, 11), scale: float = 0.33,
          outline: bool = True) -> np.ndarray:
    """White text at ``org`` (with a black outline, readable on any tile), drawn into ``img`` in place. -> img."""
    if outline:
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def tile_grid(tiles: Sequence[np.ndarray], cols: int, fill: int = 0) -> np.ndarray:
    """Equal-sized (h, w, 3) uint8 tiles -> one (rows h, cols w, 3) sheet, row by row; empty cells are ``fill``."""
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * h, cols * w, 3), fill, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    return sheet
