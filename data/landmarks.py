"""Face landmarks: the iBUG-68 convention and landmark files.

Landmarks are iBUG-68, 0-based, (68, 2) pixel coordinates (x right, y down) with pixel centres at integers (OpenCV
convention). Where only alignment is needed (``scripts/remove_mask.py --landmarks``), 5 points are accepted too, in
the order of RetinaFace / insightface ``kps`` and MTCNN: left eye, right eye, nose tip, left mouth corner, right mouth
corner (the subject's left is the image's left for a frontal face, as in ``data.align.five_points``).

Landmark files (one per image, named after the image's file stem):
    ``<stem>.npy``  float array (68, 2) [or (68, 3): the third column is ignored]; (5, 2) where 5 points are allowed
    ``<stem>.txt``  68 (or 5) lines "x y" (whitespace or comma separated; more columns are ignored)

Detectors (dlib HOG, dlib CNN, insightface, N_3D refinement) live in ``data.detectors``; alignment (5 points, the
FFHQ / Deng / release framings, paste-back) in ``data.align``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from data.io import read_array

__all__ = [
    "rescale_points",
    "N_LANDMARKS",
    "N_FIVE",
    "load_landmarks_file",
    "save_landmarks_file",
    "find_landmarks_file",
    "eye_span",
]


N_LANDMARKS = 68
N_FIVE = 5

_LANDMARK_SUFFIXES = (".npy", ".txt")


def rescale_points(points: np.ndarray | torch.Tensor, scale) -> np.ndarray | torch.Tensor:
    """Pixel coordinates (..., 2) in one image -> the same points in that image resized by ``scale`` (a number, or
    (sx, sy)), pixel centres at integers in both: x' = (x + 0.5) s - 0.5. An array stays an array, a tensor a
    tensor (dtype and device kept)."""
    if isinstance(points, torch.Tensor):
        s = torch.as_tensor(scale, dtype=points.dtype, device=points.device)
    else:
        points, s = np.asarray(points), np.asarray(scale, dtype=np.float64)
    return (points + 0.5) * s - 0.5


# ---------------------------------------------------------------------------------------------------------------------
# landmark files


def load_landmarks_file(path: str | os.PathLike, counts: tuple[int, ...] = (N_LANDMARKS,)) -> np.ndarray:
    """Read one landmark file (``.npy`` or ``.txt``, see module doc). Returns (P, 2) float32, P one of ``counts``
    (68 by default; ``(68, 5)`` also takes the 5-point format)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = read_array(path)
        else:
            text = path.read_text().replace(",", " ")
            arr = np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()])
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read landmark file {path}: {e}") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] not in counts or arr.shape[1] < 2:
        rows = " or ".join(str(c) for c in counts)
        raise ValueError(f"landmark file {path}: expected {rows} rows of x y, got shape {arr.shape}")
    if not np.isfinite(arr[:, :2]).all():
        raise ValueError(f"landmark file {path}: contains NaN/inf")
    return np.ascontiguousarray(arr[:, :2])


def save_landmarks_file(path: str | os.PathLike, landmarks: np.ndarray | torch.Tensor) -> None:
    """Write (68, 2) landmarks as ``.npy`` or ``.txt`` (chosen by the suffix). Parent folders are created."""
    path = Path(path)
    lm = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float32)
    if lm.shape != (N_LANDMARKS, 2):
        raise ValueError(f"save_landmarks_file: expected (68, 2), got {lm.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, lm)
    else:
        np.savetxt(path, lm, fmt="%.3f")


def find_landmarks_file(landmarks_dir: str | os.PathLike, stem: str) -> Path | None:
    """``<landmarks_dir>/<stem>.npy`` or ``.txt``, whichever exists first; None if neither."""
    for suffix in _LANDMARK_SUFFIXES:
        p = Path(landmarks_dir) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


# ---------------------------------------------------------------------------------------------------------------------
# geometry


def eye_span(landmarks: np.ndarray) -> float:
    """Distance in pixels between the eyes' outer corners (36, 45) of (68, 2) landmarks; from 5 points (eye centres)
    1.4 x the eye-centre distance (the ratio of dlib's 68 points on frontal faces: 1.40 on the astronaut)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape[0] == N_FIVE:
        return float(1.4 * np.hypot(*(lm[1] - lm[0])))
    return float(np.hypot(*(lm[45] - lm[36])))
