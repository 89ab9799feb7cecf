"""Temporal filters for video: One-Euro smoothing of landmarks and 3DMM coefficients, hysteresis of the occlusion
map, and matching detections to face tracks. No model in here: tasks.video feeds them.

One-Euro (Casiez et al., CHI 2012): an exponential smoother whose cutoff rises with the signal's speed,
``fc = min_cutoff + beta |dx/dt|``, so a still face is held steady (low cutoff: jitter removed) and a turning head
is followed with little lag (high cutoff). Time steps come from the frames' timestamps (variable frame rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["OneEuro", "CoeffSmoother", "MaskSmoother", "Track", "box_of", "iou", "match_tracks", "measure_lag",
           "LANDMARK_FILTER", "COEFF_FILTERS"]

# (min_cutoff Hz, beta) per signal; speeds in the signal's units per second
LANDMARK_FILTER = (1.0, 0.05)  # pixels at the video's size
# identity and texture: a slow low-pass (0.5 Hz, no speed term), not the running mean over the track: N_3D's estimates
# of them move with pose, and a running mean cost 2.5% hole L1 over 96 frames for no flicker gain (docs/video.md)
COEFF_FILTERS = {"angle": (1.0, 5.0), "trans": (1.0, 150.0), "gamma": (0.5, 1.0), "exp": (1.5, 0.5),
                 "id": (0.5, 0.0), "tex": (0.5, 0.0)}


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuro:
    """One-Euro filter over arrays of any shape (each element filtered on its own, its speed from its own
    derivative). ``__call__(x, t)`` with t in seconds, strictly increasing; the first call returns x."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"OneEuro: need min_cutoff, d_cutoff > 0 and beta >= 0, got {min_cutoff}, {d_cutoff}, "
                             f"{beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = self.t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = max(float(t) - self.t, 1e-4)
        self.t = float(t)
        a_d = _alpha(self.d_cutoff, dt)
        self.dx = a_d * (x - self.x) / dt + (1 - a_d) * self.dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()

    def predict(self, t: float) -> np.ndarray | None:
        """Where the signal will be at time t at its current speed (None before the first call)."""
        return None if self.x is None else self.x + self.dx * max(float(t) - self.t, 0.0)


class CoeffSmoother:
    """N_3D's coefficients (1, C) of one track over time, each block One-Euro filtered (COEFF_FILTERS: pose,
    translation, lighting and expression follow the face; identity and texture change slowly). A block with no filter
    passes through. ``filters=None`` uses the defaults."""

    def __init__(self, layout, filters: dict | None = None):
        self.layout = layout
        self.filters = {k: OneEuro(*v) for k, v in (filters or COEFF_FILTERS).items()}

    def __call__(self, coeffs: torch.Tensor, t: float) -> torch.Tensor:
        parts = self.layout.split(coeffs.detach().cpu().double().clone())
        for name, block in parts.items():
            if name in self.filters:
                block.copy_(torch.from_numpy(np.asarray(self.filters[name](block.numpy(), t))))
        return self.layout.join(parts).to(coeffs)


class MaskSmoother:
    """The occlusion map m (1, 1, S, S) {0, 1} of one track, in its face-aligned crop: an exponential average s of m
    (weight ``alpha`` on the new frame), and the output m_t | (s_t > keep). Every pixel N_3D marks now stays in the
    hole (nothing of the mask shows), and a pixel that blinks off for a frame or two stays in it (no flicker at the
    hole's border)."""

    def __init__(self, alpha: float = 0.3, keep: float = 0.35):
        self.alpha, self.keep = alpha, keep
        self.s = None

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        m = m.float()
        self.s = m.clone() if self.s is None or self.s.shape != m.shape else self.alpha * m + (1 - self.alpha) * self.s
        return torch.maximum(m, (self.s > self.keep).float())


@dataclass
class Track:
    """One face followed across frames. id: 0, 1, ... in order of appearance; start: first frame index;
    landmarks: (68, 2) the latest smoothed landmarks (video pixels); frames: frames processed; fusion: the track's
    tasks.fusion.FillFusion (None: no fusion)."""

    id: int
    start: int
    landmarks: np.ndarray
    lm_filter: OneEuro = field(default_factory=lambda: OneEuro(*LANDMARK_FILTER))
    coeffs: CoeffSmoother | None = None
    mask: MaskSmoother = field(default_factory=MaskSmoother)
    fusion: object | None = None
    frames: int = 0
    last_t: float = 0.0


def box_of(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the points."""
    lo, hi = np.min(landmarks, 0), np.max(landmarks, 0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_tracks(tracks: list[np.ndarray], detections: list[np.ndarray], min_iou: float = 0.3) -> dict[int, int]:
    """Greedy matching by the landmark boxes' IoU (highest first): {detection index: track index}."""
    pairs = sorted(((iou(box_of(t), box_of(d)), i, j) for j, t in enumerate(tracks) for i, d in enumerate(detections)),
                   reverse=True)
    out, used = {}, set()
    for score, i, j in pairs:
        if score < min_iou:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def outside_fraction(landmarks: np.ndarray, width: int, height: int) -> float:
    """The fraction of the points outside the frame."""
    x, y = landmarks[:, 0], landmarks[:, 1]
    return float(np.mean((x < 0) | (y < 0) | (x > width - 1) | (y > height - 1)))


def measure_lag(signal: np.ndarray, filtered: np.ndarray, max_lag: int = 20) -> int:
    """The delay in samples (>= 0) that best aligns ``filtered`` with ``signal`` (1-D): argmin over d of the mean
    squared difference of filtered[t] and signal[t - d]."""
    signal, filtered = np.asarray(signal, np.float64), np.asarray(filtered, np.float64)
    errs = [np.mean((filtered[d:] - signal[:len(signal) - d]) ** 2) for d in range(max_lag + 1)]
    return int(np.argmin(errs))
