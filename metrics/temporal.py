"""Video metrics: per-frame scores against the truth, flicker against the truth, and a truth-free flicker.

Frames are fed one at a time (``VideoScores.update``); only the previous frame is kept, so any length fits.

- per frame: L1, PSNR, SSIM and L1 in the hole (metrics.image, averaged over frames);
- **flicker against the truth**: mean over t >= 1 of |(out_t - out_{t-1}) - (truth_t - truth_{t-1})| over the
  pixels (and channels) of the union of the holes m_{t-1} | m_t: the temporal change the output adds or misses
  there. 0 for an output that changes exactly as the truth does, whatever its per-frame error;
- **flow flicker** (no truth needed): |out_t - warp(out_{t-1})| averaged over a region (the face), where the warp
  follows the dense optical flow (OpenCV's DIS, medium preset) of the *input* frames t-1 -> t when given, else of
  the outputs. Content that moves with the flow scores ~0; a flickering fill scores its flicker. Its floor is the
  flow's own error (measured on the truth, ``flow_floor``, where there is one).

Values are in [0, 1] image units (x 255 for 8-bit levels).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from data.io import to_uint8
from metrics.image import l1, l1_hole, psnr, ssim

__all__ = ["flicker_vs_truth", "flow_flicker", "warp_previous", "VideoScores"]


def _f32(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def flicker_vs_truth(out_prev: np.ndarray, out: np.ndarray, truth_prev: np.ndarray, truth: np.ndarray,
                     region: np.ndarray) -> float:
    """|(out - out_prev) - (truth - truth_prev)| averaged over ``region`` ((H, W) bool, e.g. the union of the two
    frames' holes) and the channels. Images (H, W, 3) uint8 or float in [0, 1]. NaN for an empty region."""
    if not region.any():
        return math.nan
    d = (_f32(out) - _f32(out_prev)) - (_f32(truth) - _f32(truth_prev))
    return float(np.abs(d[region]).mean())


_DIS = None


def _flow(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) with cur(x) ~ prev(x + flow(x)) (DIS from cur to prev, as warping prev needs)."""
    global _DIS
    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    g0 = cv2.cvtColor(_u8(prev), cv2.COLOR_RGB2GRAY)
    g1 = cv2.cvtColor(_u8(cur), cv2.COLOR_RGB2GRAY)
    return _DIS.calc(g1, g0, None)


def _u8(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == np.uint8 else to_uint8(img)


def warp_previous(prev: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """prev (H, W, C) sampled at x + flow(x): the previous frame moved onto the current one."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(_f32(prev), gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def flow_flicker(out_prev: np.ndarray, out: np.ndarray, region: np.ndarray, in_prev: np.ndarray | None = None,
                 inp: np.ndarray | None = None) -> float:
    """Truth-free flicker: |out - warp(out_prev)| over ``region`` ((H, W) bool) and the channels, the warp following
    the optical flow of (in_prev -> inp) when given (the input's motion; a fill that moves with the face is not
    flicker), else of (out_prev -> out). NaN for an empty region."""
    if not region.any():
        return math.nan
    flow = _flow(in_prev, inp) if in_prev is not None else _flow(out_prev, out)
    return float(np.abs(_f32(out) - warp_previous(out_prev, flow))[region].mean())


class VideoScores:
    """Streaming scores of an output video against its truth (module doc). ``update`` per frame, ``compute`` at the
    end -> dict of means: l1, psnr, ssim, l1_hole, flicker (against truth), flow_flicker (output, face region) and
    flow_floor (the same measured on the truth: what the flow alone leaves)."""

    def __init__(self, psnr_cap_db: float = 100.0):
        self.cap = psnr_cap_db
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._prev = None

    def _add(self, key: str, v: float) -> None:
        if math.isfinite(v):
            self.sums[key] = self.sums.get(key, 0.0) + v
            self.counts[key] = self.counts.get(key, 0) + 1

    def update(self, out: np.ndarray, truth: np.ndarray, hole: np.ndarray, face: np.ndarray | None = None,
               inp: np.ndarray | None = None) -> None:
        """out, truth, inp (H, W, 3) uint8; hole, face (H, W) bool (face: where flow flicker is measured; default the
        hole)."""
        face = hole if face is None else face
        o = torch.from_numpy(_f32(out)).permute(2, 0, 1)[None]
        g = torch.from_numpy(_f32(truth)).permute(2, 0, 1)[None]
        m = torch.from_numpy(hole.astype(np.float32))[None, None]
        self._add("l1", float(l1(o, g)[0]))
        self._add("psnr", min(float(psnr(o, g)[0]), self.cap))
        self._add("ssim", float(ssim(o, g)[0]))
        self._add("l1_hole", float(l1_hole(o, g, m)[0]))
        if self._prev is not None:
            po, pg, ph, pf, pi = self._prev
            self._add("flicker", flicker_vs_truth(po, out, pg, truth, ph | hole))
            self._add("flow_flicker", flow_flicker(po, out, pf | face, pi, inp))
            self._add("flow_floor", flow_flicker(pg, truth, pf | face, pi, inp))
        self._prev = (out, truth, hole, face, inp)

    def compute(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        out["frames"] = self.counts.get("l1", 0)
        return out
