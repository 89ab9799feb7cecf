"""Thin-plate-spline warps between the canonical frame and a face image.

A template is fitted to a face by a thin-plate spline through corresponding landmarks: it is exact at the anchors
(so the mask follows yaw, roll and an open mouth) and nearly affine far from them (below the chin, beyond the jaw).
``data.synth`` evaluates the inverse map (image pixel -> template pixel) on a coarse grid of cell centres and resizes
it, so a fit costs a few hundred kernel evaluations instead of one per pixel.
"""

from __future__ import annotations

import cv2
import numpy as np


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 2), (N, 2) -> (M, N) squared distances (explicit per axis: a reduction over a length-2 axis is slow)."""
    dx = a[:, 0:1] - b[None, :, 0]
    dy = a[:, 1:2] - b[None, :, 1]
    return dx * dx + dy * dy


def _kernel(d2: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """TPS radial basis U = r^2 log r^2 from squared distances (0 at r = 0), into ``out`` if given."""
    out = np.maximum(d2, 1e-20, out=out)
    np.log(out, out=out)
    out *= d2
    return out


class ThinPlateSpline:
    """2D -> 2D thin-plate spline through ``src`` -> ``dst`` (both (N, 2), N >= 3 not collinear).

    ``reg`` is the bending regulariser relative to the normalised source spread (0 = exact interpolation). The
    source points are normalised (mean, RMS radius) so the regulariser does not depend on the image size.
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray, reg: float = 1e-3):
        src = np.asarray(src, dtype=np.float64)
        dst = np.asarray(dst, dtype=np.float64)
        n = len(src)
        self.mean = src.mean(0)
        centred = src - self.mean
        self.scale = 1.0 / max(float(np.sqrt(np.vdot(centred, centred) / n)), 1e-9)
        self.ctrl = centred * self.scale
        # [[K + reg I, 1, P], [1^T, 0, 0], [P^T, 0, 0]] written in place (each block one operation)
        a = np.zeros((n + 3, n + 3))
        _kernel(_sqdist(self.ctrl, self.ctrl), out=a[:n, :n])
        a.flat[:n * (n + 4):n + 4] = reg  # the diagonal (U(0) = 0)
        a[:n, n] = 1.0
        a[:n, n + 1:] = self.ctrl
        a[n, :n] = 1.0
        a[n + 1:, :n] = self.ctrl.T
        b = np.zeros((n + 3, 2))
        b[:n] = dst
        ok, self.coef = cv2.solve(a, b, flags=cv2.DECOMP_LU)  # same LU as numpy's, a fraction of the call cost
        if not ok:
            raise np.linalg.LinAlgError("thin-plate system is singular")

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Map (M, 2) points -> (M, 2) float64."""
        p = (np.asarray(pts, dtype=np.float64).reshape(-1, 2) - self.mean) * self.scale
        n = len(self.ctrl)
        return _kernel(_sqdist(p, self.ctrl)) @ self.coef[:n] + self.coef[n] + p @ self.coef[n + 1:]

    def grid(self, xs: np.ndarray, ys: np.ndarray, dtype=np.float64) -> np.ndarray:
        """Map the grid of points (x, y) for x in ``xs``, y in ``ys`` -> (len(ys), len(xs), 2) of ``dtype``.

        Same values as ``__call__`` on the grid's points, cheaper: squared distances split into an x and a y part
        (one broadcast add per grid point and control point instead of five operations), the affine part likewise.
        ``dtype=np.float32`` does the (grid x control points) part in single precision: ~1.4x faster, errors of
        ~1e-2 template pixels, well below what a float32 sampling map resolves anyway.
        """
        px = (np.asarray(xs, dtype=np.float64) - self.mean[0]) * self.scale
        py = (np.asarray(ys, dtype=np.float64) - self.mean[1]) * self.scale
        n = len(self.ctrl)
        dx = px[:, None] - self.ctrl[:, 0]
        dy = py[:, None] - self.ctrl[:, 1]
        d2 = (dy * dy).astype(dtype, copy=False)[:, None, :] + (dx * dx).astype(dtype, copy=False)[None, :, :]
        out = (_kernel(d2).reshape(-1, n) @ self.coef[:n].astype(dtype, copy=False)).reshape(len(py), len(px), 2)
        out += (self.coef[n] + px[:, None] * self.coef[n + 1]).astype(dtype, copy=False)  # (W, 2) affine part
        out += (py[:, None] * self.coef[n + 2]).astype(dtype, copy=False)[:, None]
        return out
